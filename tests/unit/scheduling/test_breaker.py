"""Circuit breaker transitions and invariants (pure; time is a parameter)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.breaker import (
    Breaker,
    BreakerConfig,
    BreakerState,
    allows,
    describe,
    expire_trials,
    on_attempt,
    on_failure,
    on_success,
    state_at,
    trip,
)

CFG = BreakerConfig()


def fail_n(b: Breaker, n: int, now: float) -> Breaker:
    for _ in range(n):
        b = on_failure(on_attempt(b, now, CFG), now, CFG)
    return b


def test_opens_after_three_consecutive_failures() -> None:
    b = fail_n(Breaker(), 2, 0)
    assert b.state is BreakerState.CLOSED
    assert allows(b, 0, CFG)
    b = fail_n(b, 1, 1)
    assert b.state is BreakerState.OPEN
    assert not allows(b, 1, CFG)
    assert "open" in describe(b, 1, CFG)


def test_success_resets_the_failure_count() -> None:
    b = fail_n(Breaker(), 2, 0)
    b = on_success(b, 1, CFG)
    b = fail_n(b, 2, 2)
    assert b.state is BreakerState.CLOSED


def test_half_open_after_cooldown_then_closed_after_two_successes() -> None:
    b = fail_n(Breaker(), 3, 0)
    assert not allows(b, 29.9, CFG)
    assert state_at(b, 30, CFG) is BreakerState.HALF_OPEN
    assert allows(b, 30, CFG)
    b = on_attempt(b, 30, CFG)
    assert not allows(b, 30, CFG)  # one trial at a time
    b = on_success(b, 31, CFG)
    assert b.state is BreakerState.HALF_OPEN
    b = on_success(on_attempt(b, 31, CFG), 32, CFG)
    assert b.state is BreakerState.CLOSED
    assert allows(b, 32, CFG)


def test_half_open_failure_reopens_with_a_fresh_cooldown() -> None:
    b = on_attempt(fail_n(Breaker(), 3, 0), 30, CFG)
    b = on_failure(b, 31, CFG)
    assert b.state is BreakerState.OPEN
    assert not allows(b, 60, CFG)
    assert allows(b, 61, CFG)


def test_unanswered_trial_times_out_as_a_failure() -> None:
    b = on_attempt(fail_n(Breaker(), 3, 0), 30, CFG)
    assert not allows(b, 39, CFG)
    b = expire_trials(b, 40, CFG)  # trial unanswered for 10 s -> reopened at 40
    assert b.state is BreakerState.OPEN
    assert not allows(b, 69, CFG)
    assert allows(b, 70, CFG)


@given(st.lists(st.tuples(st.sampled_from(["ok", "fail"]),
                          st.floats(min_value=0, max_value=5)), max_size=60))
def test_never_allows_while_open_before_cooldown(events: list[tuple[str, float]]) -> None:
    b, now = Breaker(), 0.0
    for outcome, dt in events:
        now += dt
        if allows(b, now, CFG):
            b = on_attempt(b, now, CFG)
            b = on_success(b, now, CFG) if outcome == "ok" else on_failure(b, now, CFG)
        if b.state is BreakerState.OPEN:
            assert b.opened_at is not None
            assert allows(b, now, CFG) == (now - b.opened_at >= CFG.cooldown_s)
        assert b.consecutive_failures >= 0


def test_trip_opens_at_once_from_any_state() -> None:
    cfg = BreakerConfig()
    half = on_attempt(trip(Breaker(), 0.0), cfg.cooldown_s, cfg)
    for b in (Breaker(), on_failure(Breaker(), 1.0, cfg), half):
        t = trip(b, 50.0)
        assert state_at(t, 50.0, cfg) is BreakerState.OPEN and t.opened_at == 50.0
        assert not allows(t, 50.0 + cfg.cooldown_s - 0.001, cfg)
        assert allows(t, 50.0 + cfg.cooldown_s, cfg)
