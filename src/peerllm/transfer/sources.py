"""The swarm's bookkeeping of each source and of each range asked of one."""

from __future__ import annotations

from collections.abc import Container
from typing import Literal

import trio

from .ports import ChunkSource, SourceProgress
from .rates import RateMeter

RTT_WEIGHT = 0.3
"""Weight of a new time-to-first-chunk sample in a source's smoothed round trip."""


class Source:
    """One source in a download: what it sent, how fast, and whether it is still in."""

    def __init__(self, source: ChunkSource, *, primary: bool) -> None:
        self.source = source
        self.label = source.label
        self.kind = source.kind
        self.primary = primary
        self.state: Literal["active", "idle", "dropped"] = "idle"
        self.reason: str | None = None
        self.bytes = 0
        self.meter = RateMeter()
        self.rtt_s: float | None = None
        self.busy_tries = 0

    def progress(self, now: float) -> SourceProgress:
        return SourceProgress(label=self.label, kind=self.kind, bytes=self.bytes,
                              rate_bps=self.meter.rate(now), state=self.state,
                              reason=self.reason)

    def note_rtt(self, sample: float) -> None:
        self.rtt_s = sample if self.rtt_s is None else (
            (1 - RTT_WEIGHT) * self.rtt_s + RTT_WEIGHT * sample)


class BadChunk(Exception):
    """The source sent something that is not the chunk asked for (its fault)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


class Fetch:
    """One range in flight from one source; ``scope`` bounds it (stalls, supersession)."""

    def __init__(self, source: Source, first: int, count: int, *, deadline: float) -> None:
        self.source = source
        self.first = first
        self.count = count
        self.next = first  # the index the source must deliver next
        self.remaining = set(range(first, first + count))  # not arrived yet
        self.checking: int | None = None  # arrived, being checked and written
        self.started = trio.current_time()
        self.scope = trio.CancelScope(deadline=deadline)
        self.superseded = False  # every chunk left came from elsewhere (endgame)
        self.closed = False
        self.bad: BadChunk | None = None


class InFlight:
    """Which chunks are asked of whom: the planner's ``assigned`` and the open fetches."""

    def __init__(self) -> None:
        self.assigned: dict[int, set[str]] = {}
        self._fetches: list[Fetch] = []

    def open(self, fetch: Fetch) -> None:
        for i in fetch.remaining:
            self.assigned.setdefault(i, set()).add(fetch.source.label)
        self._fetches.append(fetch)

    def arrived(self, fetch: Fetch, index: int) -> None:
        """Chunk ``index`` is being checked: no longer waited for, still assigned (so no
        one else is asked for it meanwhile)."""
        fetch.remaining.discard(index)
        fetch.checking = index

    def delivered(self, fetch: Fetch, index: int) -> None:
        fetch.checking = None
        self._unassign(index, fetch.source.label)

    def release(self, fetch: Fetch) -> None:
        """The fetch is over: what it did not deliver is open again."""
        for i in fetch.remaining:
            self._unassign(i, fetch.source.label)
        if fetch.checking is not None:
            self._unassign(fetch.checking, fetch.source.label)
        fetch.remaining.clear()
        fetch.checking = None
        if fetch in self._fetches:
            self._fetches.remove(fetch)

    def supersede(self, verified: Container[int]) -> None:
        """End the fetches whose every chunk left came from elsewhere (endgame)."""
        for fetch in self._fetches:
            if fetch.remaining and all(i in verified for i in fetch.remaining):
                fetch.superseded = True
                fetch.scope.cancel()

    def _unassign(self, index: int, label: str) -> None:
        holders = self.assigned.get(index)
        if holders is not None:
            holders.discard(label)
            if not holders:
                del self.assigned[index]
