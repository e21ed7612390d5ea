"""The replication loop: every ``models.replication_interval_s`` this node builds its view
of the mesh, asks the rule (scheduling/replication.py) whether it should pull a model
file, and starts the pull through the Pulls service (origin "replication").

The loop never deletes anything: a model kept in too many copies stays so until an
operator removes one (protocols/replication.md). A model file that disappears from this
node while no pull of ours replaces it was deleted by the operator: its digest is
declined here for good (replication.json), and a later ``peerllm pull`` of it accepts
it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol

import trio

from ..config import ModelsConfig
from ..errors import TransferError
from ..p2p.registry import PeerRegistry, PeerState
from ..scheduling import replication as rule
from ..wire import nodeinfo as wni
from .replica_settings import ReplicaSettings

logger = logging.getLogger(__name__)

FEATURE: Final = "replication"
"""The node-info feature of nodes that run this loop (only they are candidates)."""
ORIGIN: Final = "replication"


class Transfer(Protocol):
    """A pull in flight (mesh.pulls.Transfer): only its outcome matters here."""

    @property
    def done(self) -> trio.Event: ...

    @property
    def error(self) -> TransferError | None: ...


class Pulls(Protocol):
    """The Pulls service (mesh.pulls.Pulls): starts pulls and knows which are running."""

    def start(self, ref: str, *, digest: str | None = None, model_id: str | None = None,
              origin: Literal["user", "replication"] = "user") -> Transfer: ...

    def pulling(self, digest: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Since when a model has been short of its target without a new holder."""

    holders: frozenset[str]
    since: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Statistics:
    ticks: int
    started: int  # pulls this loop started
    failed: int
    in_flight: tuple[str, ...]  # digests of our replication pulls running now
    declined: tuple[str, ...]


class Replicator:
    """Keeps this node's share of the mesh's replica targets. ``await nursery.start(r.run)``.

    Args:
        own: our own node as the mesh sees it (from our NodeInfo); ``seen_at`` is ignored.
        peers: every other node we know, as of their latest node-info.
        pulls: where pulls start.
        settings: operator targets and declined digests (persisted).
        disk_free: free bytes where pulled files go (the store's).
        interval_s, grace_s: models.replication_interval_s and _grace_s.
        clock: the clock of ``Sighting.seen_at`` (the peer registry's wall clock).
    """

    def __init__(self, *, own: Callable[[], rule.Sighting],
                 peers: Callable[[], Sequence[rule.Sighting]], pulls: Pulls,
                 settings: ReplicaSettings, disk_free: Callable[[], int], interval_s: float,
                 grace_s: float, clock: Callable[[], float] = time.time) -> None:
        self._own, self._peers, self._pulls = own, peers, pulls
        self.settings = settings
        self._disk_free = disk_free
        self._interval_s, self._grace_s, self._clock = interval_s, grace_s, clock
        self._mine: dict[str, Transfer] = {}  # digest -> our replication pull
        self._asked: dict[str, rule.ModelView] = {}  # digest -> the view that started it
        self._backoff: dict[str, rule.Backoff] = {}
        # digest -> when our pull of it succeeded: pending until our node-info lists it
        self._pulled: dict[str, float] = {}
        self._short: dict[str, Shortfall] = {}
        self._held: frozenset[str] = frozenset()  # digests we held at the last tick
        self._views: dict[str, rule.ModelView] = {}  # the last tick's, by digest
        self._wake = trio.Event()
        self._ticks = self._started = self._failed = 0

    def poke(self) -> None:
        """Check now rather than at the next interval (a target changed)."""
        self._wake.set()

    def set_replicas(self, model_id: str, replicas: int) -> None:
        """The operator's target for a model this node holds: kept in replication.json
        (outranking models.yaml) and acted on at once. Raises ValueError (bad N),
        OSError (the file cannot be written)."""
        self.settings.set_replicas(model_id, replicas)
        self.poke()

    def view(self, digest: str) -> rule.ModelView | None:
        """The last tick's view of ``digest`` (None: no target, or no live holder)."""
        return self._views.get(digest)

    def statistics(self) -> Statistics:
        return Statistics(ticks=self._ticks, started=self._started, failed=self._failed,
                          in_flight=tuple(sorted(self._mine)),
                          declined=tuple(sorted(self.settings.declined())))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Check every interval until cancelled; each pull we start is watched by a task
        in this nursery (its failure backs the file off)."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for transfer in self.tick():
                    nursery.start_soon(self._watch, transfer)
                with trio.move_on_after(self._interval_s):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _watch(self, transfer: Transfer) -> None:
        await transfer.done.wait()
        self.poke()  # the next file, or the next candidate, without waiting an interval

    def tick(self) -> list[Transfer]:
        """One round: settle finished pulls, then start the one the rule asks for.

        One replication pull at a time per node: a peer that advertises many files with
        large targets costs us one download at a time, each checked against our disk.
        """
        self._ticks += 1
        now = self._clock()
        self._settle(now)
        own, peers = self._own(), self._peers()
        held = frozenset(h.digest for h in own.held)
        self._note_deletions(held)
        known = {h.digest for s in (own, *peers) for h in s.held} | set(self._pulled)
        pulling = frozenset(d for d in known | set(self._mine) if d in self._mine
                            or d in self._pulled or self._pulls.pulling(d))
        me = replace(own, seen_at=now, pulling=pulling)
        targets = {h.digest: n for h in own.held
                   if (n := self.settings.replicas(h.model_id)) is not None}
        local = rule.Local(peer_id=me.peer_id, disk_free_bytes=self._disk_free(),
                           declined=self.settings.declined(), backoff=dict(self._backoff))
        self._views = rule.views([me, *peers], now=now, grace_s=self._grace_s,
                                 own_targets=targets)
        # forget files nobody live holds any more (hostile peers may advertise many)
        for book in (self._short, self._backoff):
            for gone in set(book) - set(self._views) - set(self._mine):
                del book[gone]
        started: list[Transfer] = []
        for digest in sorted(self._views):
            view = self._views[digest]
            # every view is judged each tick, so each shortfall's clock keeps running
            decision = rule.decide(view, local, now=now,
                                   short_for_s=self._short_for(view, now),
                                   grace_s=self._grace_s)
            if decision.pull and not self._mine:
                transfer = self._start(view, now)
                if transfer is not None:
                    started.append(transfer)
        return started

    def _start(self, view: rule.ModelView, now: float) -> Transfer | None:
        holders = ", ".join(sorted(p[-8:] for p in view.holders))
        logger.info("replicating %s (%s): target %d replicas, %d live holders (%s), "
                    "%d pulling; we rank among the first of %d candidates", view.model_id,
                    view.digest, view.target, len(view.holders), holders, len(view.pending),
                    len(view.candidates))
        try:
            transfer = self._pulls.start(view.digest, digest=view.digest,
                                         model_id=view.model_id, origin=ORIGIN)
        except ValueError as exc:  # the holders' model id is one Pulls refuses: theirs
            logger.warning("not replicating %s: %s", view.digest, exc)
            self._backoff[view.digest] = rule.after_failure(
                self._backoff.get(view.digest, rule.Backoff()), now=now)
            return None
        self._mine[view.digest] = transfer
        self._asked[view.digest] = view
        self._started += 1
        return transfer

    def _settle(self, now: float) -> None:
        for digest, at in list(self._pulled.items()):
            if now - at > self._grace_s:
                del self._pulled[digest]
        for digest, transfer in list(self._mine.items()):
            if not transfer.done.is_set():
                continue
            del self._mine[digest]
            view = self._asked.pop(digest)
            if transfer.error is None:
                self._backoff.pop(digest, None)
                self._pulled[digest] = now
                self._inherit(view)
                continue
            self._failed += 1
            b = self._backoff[digest] = rule.after_failure(
                self._backoff.get(digest, rule.Backoff()), now=now)
            logger.warning("replicating %s failed (%s); retrying in %.0f s", digest,
                           transfer.error, b.retry_at - now)

    def _inherit(self, view: rule.ModelView) -> None:
        """A copy made by replication asks for the target it was made for, so the target
        outlives the holder that set it (raised, never lowered, here: lowering a target
        takes ``peerllm replicate`` on every holder)."""
        if view.target > (self.settings.replicas(view.model_id) or 0):
            try:
                self.settings.set_replicas(view.model_id, view.target)
            except OSError as exc:
                logger.warning("cannot save %s: %s", self.settings.path, exc)

    def _note_deletions(self, held: frozenset[str]) -> None:
        """A file we held that is gone, with no pull of ours under way, was deleted here."""
        try:
            for digest in self._held - held:
                if digest not in self._mine and not self._pulls.pulling(digest):
                    logger.info("model file %s was removed here: replication will not "
                                "pull it to this node again", digest)
                    self.settings.decline(digest)
            self.settings.accept(held)
        except OSError as exc:  # remembered in memory all the same; retried on change
            logger.warning("cannot save %s: %s", self.settings.path, exc)
        self._held = held

    def _short_for(self, view: rule.ModelView, now: float) -> float:
        """How long ``view``'s file has been short with the same holders (0: not short)."""
        if rule.deficit(view) == 0:
            self._short.pop(view.digest, None)
            return 0.0
        seen = self._short.get(view.digest)
        if seen is None or not view.holders <= seen.holders:
            # new holders are progress: the chosen candidates get a fresh patience
            seen = self._short[view.digest] = Shortfall(view.holders, now)
        elif view.holders != seen.holders:
            self._short[view.digest] = Shortfall(view.holders, seen.since)
        return now - seen.since


# -- the view from node-info ---------------------------------------------------------------

def sighting_of(info: wni.NodeInfo, *, peer_id: str, seen_at: float) -> rule.Sighting:
    """A node as its NodeInfo shows it: the model files it lists by digest."""
    # a model without a digest (not computed yet, an older node) is not replicated
    held = [rule.Held(model_id=m.id, digest=m.digest, replicas=m.replicas,
                      file_bytes=m.file_bytes, memory_bytes=m.size_bytes)
            for m in info.models if m.digest is not None]
    return rule.Sighting(peer_id=peer_id, seen_at=seen_at,
                         ram_total_bytes=info.resources.ram_total_bytes,
                         replicates=FEATURE in info.capabilities.features, held=tuple(held),
                         serves=frozenset(m.id for m in info.models))


def peer_sightings(registry: PeerRegistry) -> list[rule.Sighting]:
    """Every peer whose node-info we have (the grace judges how fresh it is), except
    peers we cannot talk to at all: another protocol version, or refused."""
    return [sighting_of(e.info, peer_id=e.peer_id, seen_at=e.info_received_at)
            for e in registry.entries()
            if e.info is not None and e.info_received_at is not None
            and e.state not in (PeerState.INCOMPATIBLE, PeerState.REFUSED)]


def build_replicator(*, own_info: Callable[[], wni.NodeInfo], self_peer_id: str,
                     peers: PeerRegistry, pulls: Pulls, settings: ReplicaSettings,
                     disk_free: Callable[[], int], config: ModelsConfig) -> Replicator:
    """The Replicator of a node: its own NodeInfo and the peer registry's as the view."""
    return Replicator(
        own=lambda: sighting_of(own_info(), peer_id=self_peer_id, seen_at=0.0),
        peers=lambda: peer_sightings(peers), pulls=pulls, settings=settings,
        disk_free=disk_free, interval_s=config.replication_interval_s,
        grace_s=config.replication_grace_s)
