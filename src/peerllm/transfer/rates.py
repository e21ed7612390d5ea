"""Recent transfer rates: bytes over the last few seconds (times come from the caller)."""

from __future__ import annotations

from collections import deque
from typing import Final

RATE_WINDOW_S: Final = 5.0


class RateMeter:
    """Bytes per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._started: float | None = None
        self._sum = 0

    def add(self, now: float, n: int) -> None:
        if self._started is None:
            self._started = now
        self._samples.append((now, n))
        self._sum += n
        self._trim(now)

    def start(self, now: float) -> None:
        """Count the time from ``now`` (a fetch began) even before the first sample."""
        if self._started is None:
            self._started = now

    def rate(self, now: float) -> float:
        if self._started is None:
            return 0.0
        self._trim(now)
        span = min(self._window, now - self._started)
        return self._sum / span if span > 1e-3 else 0.0

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self._window:
            self._sum -= self._samples.popleft()[1]
