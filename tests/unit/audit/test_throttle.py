"""Flood control: a bucket per event kind, the dropped lines counted, then summarised."""

from __future__ import annotations

import pytest

from peerllm.audit.throttle import SUMMARY_EVERY_S, FloodGate, Suppressed


def test_a_burst_passes_then_the_rate_holds() -> None:
    gate = FloodGate(rate_per_s=2.0, burst=3)
    assert [gate.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert gate.allow("a", 0.5)        # one token back after 1 / rate seconds
    assert not gate.allow("a", 0.5)
    assert gate.allow("b", 0.5)        # every kind has its own bucket


def test_dropped_lines_are_summarised_once_the_window_passed() -> None:
    gate = FloodGate(rate_per_s=1.0, burst=1)
    assert gate.allow("a", 0.0)
    for _ in range(5):
        assert not gate.allow("a", 0.1)
    assert gate.due(0.5) == []                            # not yet a second old
    assert gate.due(0.1 + SUMMARY_EVERY_S) == [Suppressed("a", 5, pytest.approx(1.0))]
    assert gate.due(5.0) == []                            # counted once


def test_flush_gives_every_pending_count() -> None:
    gate = FloodGate(rate_per_s=1.0, burst=1)
    gate.allow("a", 0.0)
    gate.allow("a", 0.0)
    assert gate.due(0.2, flush=True) == [Suppressed("a", 1, pytest.approx(0.2))]


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        FloodGate(rate_per_s=0.0, burst=1)
