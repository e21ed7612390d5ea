"""The swarm's bookkeeping of each source and of each range asked of one."""

from __future__ import annotations

from typing import Literal

import trio

from .ports import ChunkSource
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
        self.remaining = set(range(first, first + count))
        self.started = trio.current_time()
        self.scope = trio.CancelScope(deadline=deadline)
        self.superseded = False  # every chunk left came from elsewhere (endgame)
        self.closed = False
        self.bad: BadChunk | None = None
