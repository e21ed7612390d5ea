"""Per-peer circuit breaker as pure functions of (breaker, now, config).

closed --(failure_threshold consecutive failures)--> open
open --(cooldown_s passed; a trial is attempted)--> half_open
half_open --(half_open_successes successes)--> closed
half_open --(a failure, or a trial unanswered for trial_timeout_s)--> open (fresh cooldown)
any --(trip: the peer is certainly down, e.g. its connection is gone)--> open
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    half_open_successes: int = 2
    half_open_max_trials: int = 1  # trial requests allowed at once while half-open
    trial_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "half_open_successes", "half_open_max_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("cooldown_s", "trial_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(frozen=True, kw_only=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    successes: int = 0  # successful trials while half-open
    trials: tuple[float, ...] = ()  # start times of half-open trials in flight


def state_at(b: Breaker, now: float, cfg: BreakerConfig) -> BreakerState:
    """The state to show and schedule by: an open breaker past its cooldown is half-open,
    a half-open one whose trial went unanswered too long is open."""
    b = expire_trials(b, now, cfg)
    if b.state is BreakerState.OPEN and b.opened_at is not None \
            and now - b.opened_at >= cfg.cooldown_s:
        return BreakerState.HALF_OPEN
    return b.state


def allows(b: Breaker, now: float, cfg: BreakerConfig) -> bool:
    """May a request go to this peer now? (Half-open: only while a trial slot is free.)"""
    b = expire_trials(b, now, cfg)
    st = state_at(b, now, cfg)
    if st is BreakerState.CLOSED:
        return True
    if st is BreakerState.OPEN:
        return False
    return len(b.trials) < cfg.half_open_max_trials


def on_attempt(b: Breaker, now: float, cfg: BreakerConfig) -> Breaker:
    """A request is being sent; while half-open it is a trial and takes a slot."""
    b = expire_trials(b, now, cfg)
    st = state_at(b, now, cfg)
    if st is BreakerState.CLOSED:
        return b
    if st is BreakerState.HALF_OPEN:
        successes = b.successes if b.state is BreakerState.HALF_OPEN else 0
        return replace(b, state=BreakerState.HALF_OPEN, successes=successes,
                       trials=(*b.trials, now))
    return b


def _drop_trial(trials: tuple[float, ...]) -> tuple[float, ...]:
    return trials[1:]


def on_success(b: Breaker, now: float, cfg: BreakerConfig) -> Breaker:
    b = expire_trials(b, now, cfg)
    if b.state is BreakerState.HALF_OPEN:
        successes = b.successes + 1
        if successes >= cfg.half_open_successes:
            return Breaker()
        return replace(b, successes=successes, trials=_drop_trial(b.trials))
    if b.state is BreakerState.OPEN:
        return b  # a late answer from before the breaker opened changes nothing
    return replace(b, consecutive_failures=0)


def on_failure(b: Breaker, now: float, cfg: BreakerConfig) -> Breaker:
    b = expire_trials(b, now, cfg)
    if b.state is BreakerState.HALF_OPEN:
        return Breaker(state=BreakerState.OPEN, consecutive_failures=b.consecutive_failures + 1,
                       opened_at=now)
    if b.state is BreakerState.OPEN:
        return replace(b, consecutive_failures=b.consecutive_failures + 1)
    failures = b.consecutive_failures + 1
    if failures >= cfg.failure_threshold:
        return Breaker(state=BreakerState.OPEN, consecutive_failures=failures, opened_at=now)
    return replace(b, consecutive_failures=failures)


def trip(b: Breaker, now: float) -> Breaker:
    """Open at once, without waiting for the threshold: the peer is certainly down (its
    connection dropped or a dial was refused), so every request sent there would fail."""
    return Breaker(state=BreakerState.OPEN, consecutive_failures=b.consecutive_failures + 1,
                   opened_at=now)


def release_trial(b: Breaker, started: float) -> Breaker:
    """The trial started at ``started`` got its answer (or its caller went away): free its
    slot without counting it; its outcome, if any, comes through on_success/on_failure."""
    if b.state is BreakerState.HALF_OPEN and started in b.trials:
        trials = list(b.trials)
        trials.remove(started)
        return replace(b, trials=tuple(trials))
    return b


def on_restart(b: Breaker, now: float, cfg: BreakerConfig) -> Breaker:
    """The peer came back as a new process: an open breaker goes half-open now (trial
    traffic decides), since what opened it was the old process dying."""
    if b.state is BreakerState.OPEN:
        return replace(b, opened_at=now - cfg.cooldown_s)
    return b


def expire_trials(b: Breaker, now: float, cfg: BreakerConfig) -> Breaker:
    """A half-open trial unanswered for trial_timeout_s is a failure: reopen."""
    if b.state is BreakerState.HALF_OPEN and b.trials:
        expired_at = min(b.trials) + cfg.trial_timeout_s
        if now >= expired_at:  # the cooldown runs from when the trial timed out
            return Breaker(state=BreakerState.OPEN,
                           consecutive_failures=b.consecutive_failures + 1, opened_at=expired_at)
    return b


def describe(b: Breaker, now: float, cfg: BreakerConfig) -> str:
    b = expire_trials(b, now, cfg)
    st = state_at(b, now, cfg)
    if st is BreakerState.CLOSED:
        return "closed" if not b.consecutive_failures else \
            f"closed ({b.consecutive_failures} recent failure(s))"
    if st is BreakerState.OPEN:
        left = cfg.cooldown_s - (now - (b.opened_at or now))
        return (f"open: {b.consecutive_failures} consecutive failures, "
                f"trial in {max(0.0, left):.0f} s")
    return f"half-open: {b.successes}/{cfg.half_open_successes} trial successes"
