"""When membership work happens: redial backoff, bootstrap retry, DHT polling (pure).

The mesh's membership loop asks these functions instead of carrying its own numbers, so
every delay is one fact that tests drive without a clock.
"""

from __future__ import annotations

from typing import Final

REDIAL_CAP_S: Final = 60.0
REDIAL_MAX_DOUBLINGS: Final = 6
BOOTSTRAP_FIRST_S: Final = 0.5
BOOTSTRAP_CAP_S: Final = 30.0
MISMATCH_REDIAL_S: Final = 60.0
"""A bootstrap peer refused for another network key is dialled again after this: the
operator asked for it and may fix either key; each refusal says so in a WARNING."""
DHT_FAST_PERIOD_S: Final = 1.0
DHT_SLOW_PERIOD_S: Final = 30.0
DHT_FAST_WINDOW_S: Final = 30.0  # while the mesh forms after start


def redial_due(*, interval_s: float, failures: int, since_last_s: float) -> bool:
    """An unreachable peer is redialled after interval × 2^failures, capped at 60 s."""
    wait = min(interval_s * 2.0 ** min(failures, REDIAL_MAX_DOUBLINGS), REDIAL_CAP_S)
    return since_last_s >= wait


def next_bootstrap_delay(delay_s: float | None) -> float:
    """The wait before the next bootstrap dial: 0.5 s first, doubling up to 30 s."""
    if delay_s is None:
        return BOOTSTRAP_FIRST_S
    return min(delay_s * 2, BOOTSTRAP_CAP_S)


def dht_poll_period(*, uptime_s: float) -> float:
    """How long the DHT loop sleeps: fast while the mesh forms, then slow."""
    return DHT_FAST_PERIOD_S if uptime_s < DHT_FAST_WINDOW_S else DHT_SLOW_PERIOD_S
