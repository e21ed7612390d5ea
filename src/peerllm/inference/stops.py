"""Stop-string detection over streamed text, holding back only what could start a stop."""

from __future__ import annotations

from collections.abc import Iterable


class StopScanner:
    """Feed generated text piece by piece; get back what is safe to emit.

    Invariant: text is released only once no stop string can start inside it, so a stop
    string is never (even partly) emitted, and everything before it always is.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add ``text``; return the part now safe to emit. Sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        held = self._held + text
        hit = min((i for i in (held.find(s) for s in self._stops) if i >= 0), default=-1)
        if hit >= 0:
            self._held = ""
            self.stopped = True
            return held[:hit]
        keep = self._partial_suffix(held)
        self._held = held[len(held) - keep:] if keep else ""
        return held[: len(held) - keep]

    def flush(self) -> str:
        """Release what was held back (generation ended without completing a stop)."""
        out, self._held = self._held, ""
        return out

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
