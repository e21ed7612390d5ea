"""Ranking the nodes that could serve a request (first version; MCDA replaces `rank`).

Pure: every input is data, nothing here reads a clock or touches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A node that serves (or can load) the requested model, as this node sees it."""

    peer_id: str
    name: str | None
    local: bool
    loaded: bool
    active: int
    queued: int
    capacity: int
    rtt_ms: float | None
    in_flight: int = 0
    """Requests this node has sent to that peer and not yet finished."""
    tokens_per_second: float | None = None
    free_memory_bytes: int | None = None
    """Free VRAM when the peer has GPUs, else free RAM."""
    degraded: bool = False
    """Resource-constrained (low free memory or a queue longer than its capacity)."""
    half_open: bool = False
    """Its circuit breaker is half-open: it only gets limited trial traffic."""


def load_ratio(c: Candidate) -> float:
    """Busy-ness in [0, ∞): (active + queued + our own in-flight) over capacity."""
    return (c.active + c.queued + c.in_flight) / max(c.capacity, 1)


def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first: this node when it can serve without queueing, then the least loaded,
    then models already in memory, then the nearest; ties by peer ID (deterministic).

    The one seam the scheduler plugs into: callers only ever take the ranked list.
    """
    def key(c: Candidate) -> tuple[int, float, int, float, str]:
        # A local idle engine beats any network hop; a local queue does not.
        local_bonus = 0 if (c.local and load_ratio(c) < 1.0) else 1
        return (local_bonus, round(load_ratio(c), 2), 0 if c.loaded else 1,
                c.rtt_ms if c.rtt_ms is not None else 1e9, c.peer_id)

    return sorted(candidates, key=key)
