"""Replication without a coordinator: which node pulls a model next (pure).

Every node runs the same rule over its own view of the mesh (protocols/replication.md):
for each model file (by digest) with a replica target N, the nodes that hold it and the
nodes pulling it are counted; if they are fewer than N, the candidates (live non-holders
with room) are ranked by rendezvous hashing and the top ``N - holders - pending`` pull.
Nodes that see the same mesh pick the same pullers, so they do not all pull at once;
views that differ a little cost at most an occasional extra copy, never a missing one
for long (see "patience" below). Nothing here ever removes a replica.

No clock reads: ``now`` and every time are parameters (wall-clock seconds, the peer
registry's clock).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

MEMORY_SHARE: Final = 0.75  # a node's model cache budget by default: 75% of its RAM
DISK_MARGIN_BYTES: Final = 1 << 30  # free disk a pull must leave behind (1 GiB)
BACKOFF_BASE_S: Final = 30.0  # wait after the first failed pull; doubles each time
BACKOFF_CAP_S: Final = 3600.0  # ... up to an hour
# A chosen candidate that has not become a holder after this long (at the rate a slow
# link moves the file) is passed over by the next in rank: it may have no room, have
# declined the model or be failing. Slow on purpose: a passed-over node that is merely
# slow makes one extra copy.
PATIENCE_RATE_BPS: Final = 10_000_000  # 10 MB/s


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """One model file a node advertises (node-info ``models``)."""

    model_id: str
    digest: str
    replicas: int = 0  # the target this node asks for (0: none)
    file_bytes: int | None = None
    memory_bytes: int | None = None  # memory needed while loaded, when advertised


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """A node as its latest node-info shows it (ourselves included)."""

    peer_id: str
    seen_at: float  # when its node-info arrived
    ram_total_bytes: int
    replicates: bool  # advertises the "replication" feature (it runs this rule)
    held: tuple[Held, ...] = ()
    pulling: frozenset[str] = frozenset()  # digests it is pulling (known for ourselves)
    # every model id it serves, digest known or not (``held`` has only the known ones)
    serves: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelView:
    """What the rule needs to know about one model file."""

    digest: str
    model_id: str
    target: int
    holders: frozenset[str]
    pending: frozenset[str]  # pulling it now: counted like holders, so we do not overshoot
    candidates: frozenset[str]  # non-holders that may pull it (live, replicating, room)
    file_bytes: int | None = None


def memory_needed(held: Iterable[Held]) -> int | None:
    """The memory a model needs while loaded: the largest estimate its holders advertise,
    else its file size (weights are at least the file), else None (unknown)."""
    held = list(held)
    estimates = [h.memory_bytes for h in held if h.memory_bytes]
    if estimates:
        return max(estimates)
    sizes = [h.file_bytes for h in held if h.file_bytes]
    return max(sizes) if sizes else None


def memory_fits(ram_total_bytes: int, needed: int | None) -> bool:
    """The shared memory rule: the model fits the default cache budget of the node's RAM.
    Every node applies it to every node (itself included) from node-info alone, so all
    agree on the candidates; an unknown need fits."""
    return needed is None or needed <= ram_total_bytes * MEMORY_SHARE


def disk_fits(free_bytes: int, file_bytes: int | None, *,
              margin_bytes: int = DISK_MARGIN_BYTES) -> bool:
    """Whether our disk takes the file with the margin left over. Only a node itself
    knows its free disk, so this is checked by the chosen node alone."""
    return free_bytes >= (file_bytes or 0) + margin_bytes


def views(sightings: Sequence[Sighting], *, now: float, grace_s: float,
          own_targets: dict[str, int] | None = None) -> dict[str, ModelView]:
    """One ModelView per digest that some live node holds and that has a target.

    Args:
        sightings: every node we know of, ourselves included.
        now: the same clock as ``Sighting.seen_at``.
        grace_s: a node whose node-info is older than this counts for nothing.
        own_targets: digest -> the target this node sets (models.yaml or an override);
            outranks nothing: the target is the largest anyone live asks for.
    """
    live = [s for s in sightings if now - s.seen_at <= grace_s]
    held_by: dict[str, list[tuple[Sighting, Held]]] = {}
    for s in live:
        for h in s.held:
            held_by.setdefault(h.digest, []).append((s, h))
    out: dict[str, ModelView] = {}
    for digest, pairs in held_by.items():
        holds = [h for _, h in pairs]
        target = max([h.replicas for h in holds] + [(own_targets or {}).get(digest, 0)])
        if target <= 0:
            continue
        holders = frozenset(s.peer_id for s, _ in pairs)
        model_id = min(h.model_id for h in holds)  # holders may name it differently
        needed = memory_needed(holds)
        pending = frozenset(s.peer_id for s in live
                            if digest in s.pulling and s.peer_id not in holders)
        candidates = frozenset(
            s.peer_id for s in live
            if s.peer_id not in holders and s.replicates
            and memory_fits(s.ram_total_bytes, needed)
            # a node serving another version of this model id keeps its own
            and model_id not in s.serves and not any(h.model_id == model_id for h in s.held))
        out[digest] = ModelView(
            digest=digest, model_id=model_id, target=target, holders=holders,
            pending=pending, candidates=candidates,
            file_bytes=max((h.file_bytes for h in holds if h.file_bytes), default=None))
    return out


def rendezvous_key(digest: str, peer_id: str) -> bytes:
    """sha256(utf8(digest) || utf8(peer_id)): a node's rank for a file (higher first)."""
    return hashlib.sha256(digest.encode() + peer_id.encode()).digest()


def rank(digest: str, peers: Iterable[str]) -> list[str]:
    """``peers`` in rendezvous order for ``digest``: highest key first (ties, which need
    a sha256 collision, by peer id)."""
    return sorted(set(peers), key=lambda p: (rendezvous_key(digest, p), p), reverse=True)


def deficit(view: ModelView) -> int:
    """How many more copies the mesh needs, counting the pulls under way."""
    return max(0, view.target - len(view.holders) - len(view.pending))


def pullers(view: ModelView) -> list[str]:
    """The candidates that should pull now: the top ``deficit`` in rendezvous order."""
    candidates = view.candidates - view.pending
    return rank(view.digest, candidates)[:deficit(view)]


def patience_s(view: ModelView, *, grace_s: float) -> float:
    """How long a chosen candidate may take before the next in rank steps in.

    At least two graces: nodes see a holder leave up to one grace apart (each counts it
    until a grace after its own last sighting), so the chosen node may start its pull
    a grace after we saw the shortfall; one grace of patience would double the copy.
    """
    return max(2 * grace_s, (view.file_bytes or 0) / PATIENCE_RATE_BPS)


def chosen(view: ModelView, *, short_for_s: float, grace_s: float) -> list[str]:
    """``pullers(view)``, widened by one more candidate per patience that the mesh has
    stayed short (without a new holder): a chosen node that cannot pull is passed over
    without anyone being told."""
    steps = int(short_for_s // patience_s(view, grace_s=grace_s)) if short_for_s > 0 else 0
    ranked = rank(view.digest, view.candidates - view.pending)
    return ranked[:deficit(view) + steps] if deficit(view) else []


@dataclass(frozen=True, slots=True)
class Backoff:
    """Failed pulls of one file in a row, and when we may try again."""

    failures: int = 0
    retry_at: float = 0.0


def after_failure(b: Backoff, *, now: float, base_s: float = BACKOFF_BASE_S,
                  cap_s: float = BACKOFF_CAP_S) -> Backoff:
    """Exponential: base, 2×base, 4×base ... capped."""
    n = b.failures + 1
    return replace(b, failures=n, retry_at=now + min(cap_s, base_s * 2 ** min(n - 1, 32)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Whether we pull ``view``'s file now, and why (for the log and the tests)."""

    pull: bool
    reason: str
    view: ModelView


@dataclass(frozen=True, kw_only=True)
class Local:
    """What only this node knows: its id, free disk, refusals and failures."""

    peer_id: str
    disk_free_bytes: int
    declined: frozenset[str] = frozenset()  # digests the operator deleted here
    backoff: dict[str, Backoff] = field(default_factory=dict)
    margin_bytes: int = DISK_MARGIN_BYTES


def decide(view: ModelView, local: Local, *, now: float, short_for_s: float,
           grace_s: float) -> Decision:
    """Whether this node should pull ``view``'s file now (see the module docstring)."""
    me = local.peer_id

    def no(reason: str) -> Decision:
        return Decision(pull=False, reason=reason, view=view)

    if me in view.holders or me in view.pending:
        return no("we hold it or are pulling it")
    if view.digest in local.declined:
        return no("the operator deleted it here")
    if deficit(view) == 0:
        return no(f"{len(view.holders)} holders and {len(view.pending)} pulling "
                  f"meet the target {view.target}")
    if me not in view.candidates:
        return no("not a candidate (memory, or another version of the model served here)")
    if me not in chosen(view, short_for_s=short_for_s, grace_s=grace_s):
        return no("other candidates rank first")
    b = local.backoff.get(view.digest)
    if b is not None and now < b.retry_at:
        return no(f"backing off after {b.failures} failed pulls")
    if not disk_fits(local.disk_free_bytes, view.file_bytes, margin_bytes=local.margin_bytes):
        return no(f"not enough disk: {local.disk_free_bytes} bytes free")
    return Decision(pull=True, reason="chosen", view=view)
