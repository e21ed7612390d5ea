"""Keyed token buckets (pure; time is a parameter): examples, then invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.ratelimit import RateLimiter


def test_a_new_key_starts_with_a_full_burst_then_waits_for_the_rate() -> None:
    rl = RateLimiter(rate_per_s=2.0, burst=3, max_keys=10)
    assert [rl.try_acquire("a", now=0.0) for _ in range(3)] == [None, None, None]
    assert rl.try_acquire("a", now=0.0) == pytest.approx(0.5)  # 1 token at 2/s
    assert rl.try_acquire("a", now=0.25) == pytest.approx(0.25)  # refused: nothing taken
    assert rl.try_acquire("a", now=0.5) is None
    assert rl.try_acquire("b", now=0.5) is None  # keys do not share buckets


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=2, max_keys=10)
    rl.try_acquire("a", now=0.0)
    assert rl.available("a", now=1_000.0) == 2.0


def test_charge_puts_a_bucket_in_debt_that_later_acquires_wait_out() -> None:
    rl = RateLimiter(rate_per_s=10.0, burst=100, max_keys=10)
    rl.charge("user", now=0.0, cost=250)  # a generation spent more than the burst
    assert rl.available("user", now=0.0) == -150
    assert rl.try_acquire("user", now=0.0, cost=1) == pytest.approx(15.1)
    assert rl.try_acquire("user", now=0.0, cost=0) == pytest.approx(15.0)  # "in debt?"
    assert rl.try_acquire("user", now=15.1, cost=1) is None


def test_a_clock_that_goes_backwards_refills_nothing() -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=1, max_keys=10)
    assert rl.try_acquire("a", now=10.0) is None
    assert rl.try_acquire("a", now=5.0) == pytest.approx(1.0)
    assert rl.try_acquire("a", now=10.5) == pytest.approx(0.5)  # from 10.0, not from 5.0


def test_full_buckets_are_dropped_first_when_keys_run_out() -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=1, max_keys=2)
    rl.try_acquire("idle", now=0.0)
    rl.try_acquire("busy", now=5.0)  # "idle" is full again at 5.0
    rl.try_acquire("new", now=5.0)
    assert len(rl) == 2
    assert rl.try_acquire("busy", now=5.0) == pytest.approx(1.0)  # still limited


def test_with_every_bucket_in_use_the_least_recently_used_is_forgiven() -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=1, max_keys=2)
    rl.try_acquire("old", now=0.0)
    rl.try_acquire("recent", now=0.0)
    rl.try_acquire("new", now=0.0)
    assert len(rl) == 2
    assert rl.try_acquire("recent", now=0.0) is not None  # kept, still empty
    assert rl.try_acquire("old", now=0.0) is None  # dropped: it starts full again


@pytest.mark.parametrize(("args", "name"), [
    ((0, 1, 1), "rate_per_s"), ((math.inf, 1, 1), "rate_per_s"), ((1, 0, 1), "burst"),
    ((1, math.nan, 1), "burst"), ((1, 1, 0), "max_keys")])
def test_bad_parameters_are_refused_by_name(args: tuple[float, float, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RateLimiter(*args)


def test_a_cost_above_the_burst_could_never_be_acquired_and_is_refused() -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=5, max_keys=1)
    with pytest.raises(ValueError, match="burst"):
        rl.try_acquire("a", now=0.0, cost=6)
    with pytest.raises(ValueError, match="cost"):
        rl.charge("a", now=0.0, cost=-1)


# -- invariants -----------------------------------------------------------------------------

rates = st.floats(min_value=0.1, max_value=100.0)
bursts = st.floats(min_value=1.0, max_value=50.0)
steps = st.lists(st.tuples(st.floats(min_value=0.0, max_value=2.0),  # time since last call
                           st.sampled_from(["a", "b", "c"]),
                           st.floats(min_value=0.0, max_value=1.0)),  # cost, as share of burst
                 max_size=60)


@given(rate=rates, burst=bursts, calls=steps)
def test_allowed_cost_in_any_window_is_at_most_burst_plus_rate_times_its_length(
        rate: float, burst: float, calls: list[tuple[float, str, float]]) -> None:
    rl = RateLimiter(rate_per_s=rate, burst=burst, max_keys=8)
    now, granted = 0.0, []
    for gap, key, share in calls:
        now += gap
        cost = share * burst
        if rl.try_acquire(key, now, cost) is None:
            granted.append((now, key, cost))
    for key in "abc":
        mine = [(t, c) for t, k, c in granted if k == key]
        for i, (start, _) in enumerate(mine):
            for j in range(i, len(mine)):
                spent = sum(c for _, c in mine[i:j + 1])
                assert spent <= burst + rate * (mine[j][0] - start) + 1e-6


@given(rate=rates, burst=bursts, calls=steps)
def test_the_advertised_wait_is_exact(rate: float, burst: float,
                                      calls: list[tuple[float, str, float]]) -> None:
    """Refused means: not before the wait (had it refilled, it would have been granted),
    and granted exactly when the wait is over."""
    rl = RateLimiter(rate_per_s=rate, burst=burst, max_keys=8)
    now = 0.0
    for gap, key, share in calls:
        now += gap
        cost = share * burst
        before = rl.available(key, now)
        wait = rl.try_acquire(key, now, cost)
        if wait is None:
            assert before >= cost - 1e-6
            continue
        assert wait > 0
        assert rl.available(key, now) == before  # a refusal takes nothing
        now += wait
        assert rl.try_acquire(key, now, cost) is None


@given(max_keys=st.integers(min_value=1, max_value=5),
       keys=st.lists(st.integers(min_value=0, max_value=50), max_size=100))
def test_the_number_of_buckets_is_bounded(max_keys: int, keys: list[int]) -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=3, max_keys=max_keys)
    for i, key in enumerate(keys):
        rl.try_acquire(key, now=i * 0.1)
        rl.charge(key, now=i * 0.1, cost=0.5)
        assert len(rl) <= max_keys


@given(rate=rates, burst=bursts, debt=st.floats(min_value=0.0, max_value=500.0),
       idle=st.floats(min_value=0.0, max_value=1000.0))
def test_a_charge_is_repaid_at_the_rate(rate: float, burst: float, debt: float,
                                        idle: float) -> None:
    rl = RateLimiter(rate_per_s=rate, burst=burst, max_keys=1)
    rl.charge("k", now=0.0, cost=debt)
    assert rl.available("k", now=idle) == pytest.approx(
        min(burst, burst - debt + idle * rate), abs=1e-6)
