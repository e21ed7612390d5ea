"""The membership loop's delays (pure policy): redial backoff, bootstrap retry, DHT poll."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.membership import (
    BOOTSTRAP_CAP_S,
    BOOTSTRAP_FIRST_S,
    DHT_FAST_PERIOD_S,
    DHT_FAST_WINDOW_S,
    DHT_SLOW_PERIOD_S,
    REDIAL_CAP_S,
    dht_poll_period,
    next_bootstrap_delay,
    redial_due,
)


def test_redial_waits_double_per_failure_up_to_the_cap() -> None:
    assert redial_due(interval_s=2.0, failures=0, since_last_s=2.0)
    assert not redial_due(interval_s=2.0, failures=2, since_last_s=7.9)
    assert redial_due(interval_s=2.0, failures=2, since_last_s=8.0)
    assert redial_due(interval_s=2.0, failures=1000, since_last_s=REDIAL_CAP_S)


@given(st.floats(0.1, 30.0), st.integers(0, 10_000), st.floats(0.0, 1e6))
def test_redial_is_monotone_in_time_and_never_waits_past_the_cap(
        interval: float, failures: int, since: float) -> None:
    if redial_due(interval_s=interval, failures=failures, since_last_s=since):
        assert redial_due(interval_s=interval, failures=failures, since_last_s=since + 1)
    if since >= REDIAL_CAP_S:
        assert redial_due(interval_s=interval, failures=failures, since_last_s=since)


def test_bootstrap_delay_starts_short_and_doubles_to_the_cap() -> None:
    delays = [next_bootstrap_delay(None)]
    for _ in range(10):
        delays.append(next_bootstrap_delay(delays[-1]))
    assert delays[0] == BOOTSTRAP_FIRST_S and delays[1] == 2 * BOOTSTRAP_FIRST_S
    assert max(delays) == BOOTSTRAP_CAP_S == delays[-1]
    assert delays == sorted(delays)


def test_dht_polls_fast_while_the_mesh_forms_then_slow() -> None:
    assert dht_poll_period(uptime_s=0.0) == DHT_FAST_PERIOD_S
    assert dht_poll_period(uptime_s=DHT_FAST_WINDOW_S) == DHT_SLOW_PERIOD_S
