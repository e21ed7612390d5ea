"""Which nodes may get a request for a model, and why each of the others may not.

Pure: the caller describes every node as a `NodeView` (from its registry and node-info)
and passes ``now``; nothing here reads a clock or touches the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .breaker import Breaker, BreakerConfig, BreakerState, allows, describe, state_at
from .candidates import Candidate
from .pins import pin_matches, split_pin

LOW_MEMORY_FRACTION = 0.10  # under this much memory free, a node counts as degraded


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferedModel:
    """One model a node lists in its node-info."""

    id: str
    loaded: bool
    size_bytes: int | None = None
    digest: str | None = None  # sha256:<hex> of the file it serves, once known
    prefixes: tuple[bytes, ...] = ()  # conversations its batch slots hold (wire.prefixes)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    """Everything this node knows about one node (itself included) when placing a request."""

    peer_id: str
    name: str | None
    local: bool = False
    healthy: bool = True
    state_reason: str | None = None
    """Why the registry does not count it healthy (unreachable, stale, ...)."""
    info_age_s: float | None = 0.0
    """Age of its node-info; None: never received."""
    protocols: frozenset[str] = frozenset()
    models: tuple[OfferedModel, ...] = ()
    free_memory_bytes: int | None = None
    total_memory_bytes: int | None = None
    active: int = 0
    queued: int = 0
    capacity: int = 1
    rtt_ms: float | None = None
    tokens_per_second: float | None = None
    in_flight: int = 0
    breaker: Breaker = field(default_factory=Breaker)
    busy_for_s: float = 0.0
    """How much longer it asked us to wait (Retry-After of its last "busy" refusal)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What a candidate must satisfy."""

    protocol: str
    """The inference protocol a remote node must speak."""
    max_info_age_s: float
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


@dataclass(frozen=True, slots=True)
class Exclusion:
    peer_id: str
    label: str  # its name, else its peer ID
    reason: str
    busy_for_s: float = 0.0
    """> 0: its only problem is that it asked us to wait this long (Retry-After)."""


@dataclass(frozen=True, slots=True)
class Filtered:
    candidates: list[Candidate]
    excluded: list[Exclusion]
    """Nodes that list the model but may not get it now, each with the reason."""
    versions: dict[str, str | None] = field(default_factory=dict)
    """For a pinned id: node label -> the digest of the other version it serves (None:
    not computed yet), so a refusal can name what is served."""

    def reasons(self) -> dict[str, str]:
        return {e.label: e.reason for e in self.excluded}

    def busy(self) -> dict[str, float]:
        """Peer -> seconds until it said it has room, for nodes excluded only for that."""
        return {e.peer_id: e.busy_for_s for e in self.excluded if e.busy_for_s > 0}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def memory_shortfall(view: NodeView, model: OfferedModel) -> str | None:
    """Why ``model`` cannot be loaded on ``view`` (None: it is loaded, or it fits).

    A node may evict its other loaded models to make room, so their memory counts as
    available; only a model that cannot fit even then is refused.
    """
    if model.loaded or model.size_bytes is None or view.free_memory_bytes is None:
        return None
    reclaimable = sum(m.size_bytes or 0 for m in view.models if m.loaded and m.id != model.id)
    available = view.free_memory_bytes + reclaimable
    if model.size_bytes <= available:
        return None
    return (f"not enough memory to load it: needs {_gib(model.size_bytes)}, "
            f"{_gib(available)} free or reclaimable")


def degraded(view: NodeView) -> bool:
    """Resource-constrained: little memory free, or a queue longer than its capacity."""
    total, free = view.total_memory_bytes, view.free_memory_bytes
    low_memory = bool(total and free is not None and free < LOW_MEMORY_FRACTION * total)
    return low_memory or view.queued > max(view.capacity, 1)


def busy_reason(view: NodeView) -> str | None:
    if view.busy_for_s > 0:
        return f"busy: retry in {view.busy_for_s:.1f} s"
    return None


def exclusion_reason(view: NodeView, model: OfferedModel, now: float, policy: Policy
                     ) -> str | None:
    """Why ``view`` may not get a request for ``model`` now (None: it may)."""
    if view.local:  # our own engine: no network, no breaker, our info is always current
        return busy_reason(view) or memory_shortfall(view, model)
    if not view.healthy:
        return view.state_reason or "not healthy"
    if view.info_age_s is None:
        return "no node-info received yet"
    if view.info_age_s > policy.max_info_age_s:
        return (f"node-info is {view.info_age_s:.0f} s old "
                f"(more than {policy.max_info_age_s:.0f} s)")
    if policy.protocol not in view.protocols:
        return f"does not speak {policy.protocol}"
    if not allows(view.breaker, now, policy.breaker):
        return f"circuit breaker {describe(view.breaker, now, policy.breaker)}"
    return busy_reason(view) or memory_shortfall(view, model)


def filter_candidates(views: Iterable[NodeView], model: str, now: float, policy: Policy
                      ) -> Filtered:
    """Split the nodes that list ``model`` into candidates and exclusions (with reasons).

    Nodes that do not list the model at all are neither: they are not candidates for it.
    A pinned ``id@<digest prefix>`` (pins.py) is listed only by the nodes whose file has
    that digest; a malformed pin is listed by none.
    """
    out: list[Candidate] = []
    excluded: list[Exclusion] = []
    versions: dict[str, str | None] = {}
    try:
        model_id, pin = split_pin(model)
    except ValueError:
        return Filtered(out, excluded, versions)
    for view in views:
        offered = next((m for m in view.models if m.id == model_id), None)
        if offered is None:
            continue
        if pin is not None and not pin_matches(pin, offered.digest):
            versions[view.name or view.peer_id] = offered.digest
            continue
        reason = exclusion_reason(view, offered, now, policy)
        if reason is not None:
            only_busy = reason == busy_reason(view)
            excluded.append(Exclusion(view.peer_id, view.name or view.peer_id, reason,
                                      busy_for_s=view.busy_for_s if only_busy else 0.0))
            continue
        out.append(Candidate(
            peer_id=view.peer_id, name=view.name, local=view.local, loaded=offered.loaded,
            active=view.active, queued=view.queued, capacity=view.capacity,
            rtt_ms=0.0 if view.local else view.rtt_ms, in_flight=view.in_flight,
            tokens_per_second=view.tokens_per_second,
            free_memory_bytes=view.free_memory_bytes, degraded=degraded(view),
            prefixes=offered.prefixes,
            half_open=not view.local and state_at(view.breaker, now, policy.breaker)
            is BreakerState.HALF_OPEN))
    return Filtered(out, excluded, versions)
