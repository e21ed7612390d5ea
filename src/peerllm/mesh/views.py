"""How the router sees every node right now: NodeViews from our engine, the peer
registry, each peer's breaker, and the load peers reported in ``accepted``.

``PeerLoads`` is the router's own per-peer bookkeeping (in-flight counts, fresh load
hints, "busy, retry after" deadlines); ``build_views`` joins it with the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from ..p2p.registry import PeerRegistry, PeerState
from ..scheduling.filter import NodeView, OfferedModel
from ..wire import nodeinfo as wni
from ..wire.load import Load
from .breakers import BreakerBook
from .ports import SelfView


def free_memory(res: wni.Resources) -> int:
    """Free VRAM when the node has GPUs, else free RAM."""
    return sum(g.vram_free_bytes for g in res.gpus) if res.gpus else res.ram_free_bytes


def total_memory(res: wni.Resources) -> int:
    return sum(g.vram_total_bytes for g in res.gpus) if res.gpus else res.ram_total_bytes


MAX_BUSY_HINT_S: Final = 10.0


@dataclass
class PeerLoads:
    """What our own requests taught us about each peer's load."""

    in_flight: dict[str, int] = field(default_factory=dict)
    # peer -> (its load from its last `accepted`, wall time): fresher than node-info.
    hints: dict[str, tuple[Load, float]] = field(default_factory=dict)
    # peer -> trio time before which it asked not to be sent more (Retry-After).
    busy_until: dict[str, float] = field(default_factory=dict)

    def started(self, peer_id: str) -> None:
        self.in_flight[peer_id] = self.in_flight.get(peer_id, 0) + 1

    def finished(self, peer_id: str) -> None:
        left = self.in_flight.get(peer_id, 1) - 1
        if left <= 0:
            self.in_flight.pop(peer_id, None)
        else:
            self.in_flight[peer_id] = left

    def busy(self, peer_id: str, wait_s: float, *, now: float) -> None:
        """``peer_id`` said it is full for ``wait_s`` (capped: one hint must not shut a
        peer out for long)."""
        self.busy_until[peer_id] = now + min(max(wait_s, 0.0), MAX_BUSY_HINT_S)

    def accepted(self, peer_id: str, load: Load | None, *, wall: float) -> None:
        """``peer_id`` took a request: it has room, and this is its load."""
        self.busy_until.pop(peer_id, None)
        if load is not None:
            self.hints[peer_id] = (load, wall)

    def forget_except(self, keep: set[str]) -> None:
        for table in (self.hints, self.busy_until):
            for peer_id in [p for p in table if p not in keep]:
                del table[peer_id]


def local_view(local: SelfView, busy_for_s: float = 0.0) -> NodeView:
    res = local.resources()
    statuses = local.model_statuses()
    return NodeView(
        peer_id=local.peer_id, name=local.name, local=True,
        models=tuple(OfferedModel(id=m.id, loaded=m.state == "loaded",
                                  size_bytes=m.memory_bytes or None, digest=m.digest,
                                  prefixes=local.prefixes(m.id) if m.state == "loaded" else ())
                     for m in statuses),
        free_memory_bytes=free_memory(res), total_memory_bytes=total_memory(res),
        active=sum(m.active for m in statuses), queued=sum(m.queued for m in statuses),
        capacity=local.capacity(),
        tokens_per_second=max((m.tokens_per_second for m in statuses
                               if m.tokens_per_second is not None), default=None),
        busy_for_s=busy_for_s)


def build_views(local: SelfView, registry: PeerRegistry, breakers: BreakerBook,
                loads: PeerLoads, *, now: float, wall: float) -> list[NodeView]:
    """This node (if it has an engine) and every peer with node-info, as of ``now``."""
    def busy_for(peer_id: str) -> float:
        return max(0.0, loads.busy_until.get(peer_id, now) - now)

    out: list[NodeView] = [local_view(local, busy_for(local.peer_id))] \
        if local.engine is not None else []
    for e in registry.entries():
        info = e.info
        if info is None:
            continue
        load = info.load
        hint = loads.hints.get(e.peer_id)
        if hint is not None:
            if e.info_received_at is None or hint[1] >= e.info_received_at:
                load = hint[0]
            else:
                del loads.hints[e.peer_id]  # node-info is newer
        out.append(NodeView(
            peer_id=e.peer_id, name=e.name,
            healthy=e.state is PeerState.HEALTHY,
            state_reason=f"{e.state.value}: {e.reason or 'not healthy'}",
            info_age_s=None if e.info_received_at is None
            else max(0.0, wall - e.info_received_at),
            protocols=frozenset(info.capabilities.protocols),
            models=tuple(OfferedModel(id=m.id, loaded=m.loaded, size_bytes=m.size_bytes,
                                      digest=m.digest, prefixes=m.prefixes)
                         for m in info.models),
            free_memory_bytes=free_memory(info.resources),
            total_memory_bytes=total_memory(info.resources),
            active=load.active, queued=load.queued, capacity=load.capacity,
            rtt_ms=e.rtt_ms, tokens_per_second=info.performance.tokens_per_second,
            in_flight=loads.in_flight.get(e.peer_id, 0), breaker=breakers.get(e.peer_id, now),
            busy_for_s=busy_for(e.peer_id)))
    known = {e.peer_id for e in registry.entries()} | set(loads.in_flight) | {local.peer_id}
    breakers.forget_except(known)
    loads.forget_except(known)
    return out
