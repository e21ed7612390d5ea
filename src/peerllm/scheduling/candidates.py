"""What the scheduler knows about one node that could serve a request.

Pure: every input is data, nothing here reads a clock or touches the network.
"""

from __future__ import annotations

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
    prefixes: tuple[bytes, ...] = ()
    """Conversation digests (wire.prefixes) whose KV cache it holds for this model."""


def load_ratio(c: Candidate) -> float:
    """Busy-ness in [0, ∞): (active + queued + our own in-flight) over capacity."""
    return (c.active + c.queued + c.in_flight) / max(c.capacity, 1)
