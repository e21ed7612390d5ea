"""Flood control for the audit log: a token bucket per event kind, and what it dropped.

A hostile peer can make us refuse it as fast as it can connect, and every refusal is an
audit line. Each event kind may write ``rate_per_s`` lines per second on average and
``burst`` at once; lines over that are counted, not written, and the count comes out as
one ``suppressed`` line per kind once ``SUMMARY_EVERY_S`` has passed since the first
dropped line (written with the next line of any kind, or when the log closes). So a
flood costs at most ``rate_per_s`` + 1 lines per second per kind — and the log's size
rotation bounds the disk whatever happens. Pure: ``now`` is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SUMMARY_EVERY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Suppressed:
    """``count`` lines of ``kind`` were dropped over the last ``window_s`` seconds."""

    kind: str
    count: int
    window_s: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    dropped: int = 0
    first_dropped: float = 0.0


class FloodGate:
    """Decides which audit lines are written; not thread-safe (the caller locks)."""

    def __init__(self, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, kind: str, now: float) -> bool:
        """Whether a line of ``kind`` may be written now (if not, it is counted)."""
        b = self._buckets.get(kind)
        if b is None:
            b = self._buckets[kind] = _Bucket(tokens=float(self._burst), stamp=now)
        b.tokens = min(float(self._burst), b.tokens + max(now - b.stamp, 0.0) * self._rate)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        if b.dropped == 0:
            b.first_dropped = now
        b.dropped += 1
        return False

    def due(self, now: float, *, flush: bool = False) -> list[Suppressed]:
        """The counts to write now (and forget): those older than SUMMARY_EVERY_S, or
        all of them with ``flush``."""
        out = []
        for kind, b in self._buckets.items():
            if b.dropped and (flush or now - b.first_dropped >= SUMMARY_EVERY_S):
                out.append(Suppressed(kind, b.dropped, max(now - b.first_dropped, 0.0)))
                b.dropped = 0
        return out
