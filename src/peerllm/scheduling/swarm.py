"""Which chunks of a file to ask of which source next (pure: numbers in, ranges out).

Each source gets a window of chunks in flight sized by what it delivers: its measured
rate times a horizon (its round trip, at least ``MIN_HORIZON_S``), between 1 and
``MAX_WINDOW`` chunks, so a fast source keeps its pipe full and a slow one holds few
chunks back. Chunks go out lowest first, so the whole-file sha256 (computed in order)
stays close to the front. When nothing is left unassigned, an idle source may take a
chunk another source still holds (endgame): a straggler near the end then costs one
duplicate chunk instead of its whole delay; the first verified copy wins.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

MAX_WINDOW: Final = 8
"""At most this many chunks in flight per source (32 MiB at 4 MiB chunks)."""
FIRST_WINDOW: Final = 2
"""The window of a source not measured yet: enough to measure it without hoarding."""
MIN_HORIZON_S: Final = 0.25
"""Seconds of a source's rate kept in flight even on a near-zero RTT, so the gap between
one range and the next is a small part of the time."""
MAX_COPIES: Final = 2
"""An endgame chunk is asked of at most this many sources at once."""
STRAGGLER_RATIO: Final = 2.0
"""An endgame copy is asked only of a source this many times faster than the holder."""


@dataclass(frozen=True, slots=True)
class SourceView:
    """What the planner knows of one source (the engine measures)."""

    label: str
    rate_bps: float | None  # delivered bytes/s recently; None = not measured yet
    rtt_s: float | None  # time to the first chunk of a range; None = not measured
    in_flight: int  # chunks asked of it and not delivered yet
    solo: bool = False  # the only source left: it takes the whole open run at once


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask ``source`` for chunks ``first`` .. ``first + count - 1``."""

    source: str
    first: int
    count: int


def window(rate_bps: float | None, rtt_s: float | None, chunk_bytes: int) -> int:
    """Chunks a source should have in flight, 1..MAX_WINDOW."""
    if rate_bps is None or rate_bps <= 0 or chunk_bytes <= 0:
        return FIRST_WINDOW
    horizon = max(rtt_s or 0.0, MIN_HORIZON_S)
    return max(1, min(MAX_WINDOW, math.ceil(rate_bps * horizon / chunk_bytes)))


def next_ask(source: SourceView, *, count: int, chunk_bytes: int,
             verified: Collection[int], assigned: Mapping[int, Collection[str]],
             start: int = 0, rates: Mapping[str, float | None] | None = None) -> Ask | None:
    """The next range to ask of ``source``, or None (its window is full, or nothing is
    left for it). A ``solo`` source is asked the whole open run: with nobody to share
    with, one request (one HTTP Range for the rest of the file) beats many.

    ``assigned`` maps each chunk in flight to the sources asked for it. A range never
    holds a verified chunk nor one already asked of anyone, except in the endgame: then
    one chunk held by a single other source, the lowest such; with ``rates`` (each
    source's measured rate), only a chunk whose holder is less than half as fast as
    ``source``, so equal sources do not fetch each other's chunks twice. ``start``:
    every chunk below it is verified (the engine's low-water mark; it only saves the scan).
    """
    free = count if source.solo else (
        window(source.rate_bps, source.rtt_s, chunk_bytes) - source.in_flight)
    if free <= 0:
        return None
    first = _first_open(start, count, verified, assigned)
    if first is not None:
        length = 1
        while length < free and _is_open(first + length, count, verified, assigned):
            length += 1
        return Ask(source.label, first, length)
    if source.in_flight:
        return None  # endgame duplicates only for a source with nothing else to do
    for index in sorted(assigned):
        holders = assigned[index]
        if index not in verified and source.label not in holders \
                and 0 < len(holders) < MAX_COPIES \
                and (rates is None or all(_straggler(rates.get(h), source.rate_bps)
                                          for h in holders)):
            return Ask(source.label, index, 1)
    return None


def _straggler(holder_bps: float | None, asker_bps: float | None) -> bool:
    """The holder is worth overtaking: measured at less than half the asker's rate."""
    if asker_bps is None:
        return False
    return holder_bps is None or holder_bps * STRAGGLER_RATIO < asker_bps


def _is_open(index: int, count: int, verified: Collection[int],
             assigned: Mapping[int, Collection[str]]) -> bool:
    return index < count and index not in verified and not assigned.get(index)


def _first_open(start: int, count: int, verified: Collection[int],
                 assigned: Mapping[int, Collection[str]]) -> int | None:
    # From the low-water mark, so a scan passes only the chunks in flight or verified ahead.
    for index in range(max(0, start), count):
        if _is_open(index, count, verified, assigned):
            return index
    return None
