"""The replication loop over a fake mesh on a virtual clock: nodes converge to the
target with one pull per missing copy, a holder that stops is replaced only after the
grace, a chosen node that cannot pull is passed over, and a model the operator deleted
is not pulled back."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from peerllm.errors import NoSource, TransferError
from peerllm.mesh.replica_settings import ReplicaSettings
from peerllm.mesh.replication import Replicator
from peerllm.scheduling import replication as rule

DIGEST = "sha256:" + "5e" * 32
MODEL = "tiny"
GIB = 1 << 30
FILE = 100 * 10**6  # small enough that a chosen node's patience is the grace
INTERVAL_S, GRACE_S, PULL_S = 10.0, 60.0, 25.0


@dataclass
class Transfer:
    done: trio.Event = field(default_factory=trio.Event)
    error: TransferError | None = None


@dataclass(eq=False)
class FakeNode:
    """One node of the fake mesh: what it holds, whether it runs, its pulls."""

    peer_id: str
    mesh: FakeMesh
    held: list[rule.Held] = field(default_factory=list)
    alive: bool = True
    stopped_at: float = 0.0
    disk_free: int = 100 * GIB
    fail_pulls: bool = False
    pulls: list[str] = field(default_factory=list)  # digests it started pulling
    running: dict[str, Transfer] = field(default_factory=dict)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def sighting(self) -> rule.Sighting:
        """Its node-info: a target set with ``set_replicas`` is advertised at once."""
        seen = trio.current_time() if self.alive else self.stopped_at
        r = self.mesh.replicators.get(self.peer_id)
        held = tuple(dataclasses.replace(h, replicas=r.settings.replicas(h.model_id) or
                                         h.replicas) if r else h for h in self.held)
        return rule.Sighting(peer_id=self.peer_id, seen_at=seen, ram_total_bytes=16 * GIB,
                             replicates=True, held=held)

    # -- the Pulls port --
    def start(self, ref: str, *, digest: str | None = None, model_id: str | None = None,
              origin: str = "user") -> Transfer:
        assert digest is not None and model_id is not None and origin == "replication"
        if model_id.startswith("-"):
            raise ValueError(f"model: {model_id!r} is not a model id")
        self.pulls.append(digest)
        transfer = self.running[digest] = Transfer()
        self.mesh.nursery.start_soon(self._pull, digest, model_id, transfer)
        return transfer

    def pulling(self, digest: str) -> bool:
        return digest in self.running

    async def _pull(self, digest: str, model_id: str, transfer: Transfer) -> None:
        await trio.sleep(PULL_S)
        del self.running[digest]
        if self.fail_pulls:
            transfer.error = NoSource("every source failed", reasons={})
        else:
            self.held.append(rule.Held(model_id=model_id, digest=digest, file_bytes=FILE))
        transfer.done.set()


@dataclass
class FakeMesh:
    nursery: trio.Nursery
    root: Path
    nodes: list[FakeNode] = field(default_factory=list)
    replicators: dict[str, Replicator] = field(default_factory=dict)

    def add(self, peer_id: str, *, held: int = 0, **changes: object) -> FakeNode:
        node = FakeNode(peer_id, self, **changes)  # type: ignore[arg-type]
        if held:
            node.held.append(rule.Held(model_id=MODEL, digest=DIGEST, replicas=held,
                                       file_bytes=FILE))
        self.nodes.append(node)
        return node

    async def start(self, node: FakeNode) -> None:
        """Run ``node``'s loop (until ``stop``)."""
        r = self.replicators[node.peer_id] = Replicator(
            own=node.sighting, peers=lambda: [n.sighting() for n in self.nodes if n is not node],
            pulls=node, settings=ReplicaSettings(self.root / f"{node.peer_id}.json"),
            disk_free=lambda: node.disk_free, interval_s=INTERVAL_S, grace_s=GRACE_S,
            clock=trio.current_time)

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with node.scope:
                await r.run(task_status=task_status)

        await self.nursery.start(run)

    async def start_all(self) -> None:
        """Start every node's loop at the same instant, as if they had all been up."""
        for node in self.nodes:
            await self.start(node)

    def stop(self, node: FakeNode) -> None:
        node.alive, node.stopped_at = False, trio.current_time()
        node.scope.cancel()

    def holders(self) -> set[str]:
        return {n.peer_id for n in self.nodes if n.alive and any(
            h.digest == DIGEST for h in n.held)}

    def pulls(self) -> int:
        return sum(len(n.pulls) for n in self.nodes)


@asynccontextmanager
async def fake_mesh(root: Path) -> AsyncIterator[FakeMesh]:
    async with trio.open_nursery() as nursery:
        yield FakeMesh(nursery, root)
        nursery.cancel_scope.cancel()


def ranked(among: set[str]) -> list[str]:
    return rule.rank(DIGEST, among)


async def test_the_mesh_converges_to_the_target_and_recovers_after_the_grace(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        mesh.add("holder-a", held=2)
        for name in ("b", "c", "d", "e"):
            mesh.add(name)
        await mesh.start_all()
        await trio.sleep(INTERVAL_S * 2 + PULL_S)
        first = ranked({"b", "c", "d", "e"})[0]
        assert mesh.holders() == {"holder-a", first}
        assert mesh.pulls() == 1  # the others waited: nobody overshot

        await trio.sleep(10 * INTERVAL_S)
        assert mesh.pulls() == 1  # at the target, nothing more happens

        mesh.stop(next(n for n in mesh.nodes if n.peer_id == first))
        await trio.sleep(GRACE_S - INTERVAL_S)
        assert mesh.pulls() == 1  # within the grace, a stopped holder still counts

        await trio.sleep(2 * INTERVAL_S + PULL_S)
        second = ranked({"c", "d", "e", "b"} - {first})[0]
        assert mesh.holders() == {"holder-a", second}
        assert mesh.pulls() == 2


async def test_copies_inherit_the_target_so_it_outlives_the_first_holder(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        a = mesh.add("holder-a", held=2)
        for name in ("b", "c", "d"):
            mesh.add(name)
        await mesh.start_all()
        await trio.sleep(INTERVAL_S + PULL_S + 1)
        first = ranked({"b", "c", "d"})[0]
        assert mesh.replicators[first].settings.replicas(MODEL) == 2
        mesh.stop(a)  # the node whose models.yaml asked for 2 copies
        await trio.sleep(GRACE_S + 2 * INTERVAL_S + PULL_S)
        assert mesh.holders() == {first, ranked({"b", "c", "d"} - {first})[0]}


async def test_a_larger_target_brings_several_copies_at_once(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        mesh.add("holder-a", held=3)
        for name in ("b", "c", "d", "e"):
            mesh.add(name)
        await mesh.start_all()
        await trio.sleep(INTERVAL_S + PULL_S + 1)
        assert mesh.holders() == {"holder-a", *ranked({"b", "c", "d", "e"})[:2]}
        assert mesh.pulls() == 2


async def test_a_chosen_node_that_cannot_pull_is_passed_over_after_its_patience(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        mesh.add("holder-a", held=2)
        first, second = ranked({"b", "c"})
        mesh.add(first, disk_free=FILE)  # no room: it never starts
        mesh.add(second)
        await mesh.start_all()
        await trio.sleep(2 * GRACE_S - INTERVAL_S)  # patience: two graces
        assert mesh.pulls() == 0  # the second waits for the first...
        await trio.sleep(2 * INTERVAL_S + PULL_S)
        assert mesh.holders() == {"holder-a", second}  # ...then steps in


async def test_a_failed_pull_backs_off(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        mesh.add("holder-a", held=2)
        node = mesh.add("b", fail_pulls=True)
        await mesh.start_all()
        await trio.sleep(PULL_S + 1)  # the first pull failed at PULL_S
        assert node.pulls == [DIGEST]
        await trio.sleep(rule.BACKOFF_BASE_S - 2)
        assert len(node.pulls) == 1  # waiting out the back-off
        await trio.sleep(INTERVAL_S + 1)
        assert len(node.pulls) == 2
        stats = mesh.replicators["b"].statistics()
        assert stats.failed >= 1 and stats.started == 2


async def test_a_model_deleted_here_is_not_pulled_back(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        mesh.add("holder-a", held=2)
        node = mesh.add("b", held=2)
        await mesh.start_all()
        await trio.sleep(INTERVAL_S + 1)
        node.held.clear()  # the operator deleted it on b
        await trio.sleep(GRACE_S * 3)
        assert node.pulls == []
        assert DIGEST in ReplicaSettings(tmp_path / "b.json").declined()  # persisted


async def test_a_target_set_here_is_acted_on_at_once(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with fake_mesh(tmp_path) as mesh:
        mesh.add("holder-a", held=1)
        mesh.add("b")
        await mesh.start_all()
        await trio.sleep(3.5 * INTERVAL_S)  # between two ticks
        assert mesh.pulls() == 0  # a target of 1 is met by the holder
        mesh.replicators["holder-a"].set_replicas(MODEL, 2)  # `peerllm replicate` on a
        await trio.sleep(1)
        assert mesh.pulls() == 0  # b learns of it from a's node-info, at its next tick
        await trio.sleep(INTERVAL_S + PULL_S)
        assert mesh.holders() == {"holder-a", "b"}
        view = mesh.replicators["holder-a"].view(DIGEST)
        assert view is not None and view.target == 2


OTHER = "sha256:" + "77" * 32


async def test_one_replication_pull_at_a_time_and_a_refused_one_is_skipped(
        autojump_clock: trio.testing.MockClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    async with fake_mesh(tmp_path) as mesh:
        a = mesh.add("holder-a", held=2)
        a.held += [rule.Held(model_id="second", digest=OTHER, replicas=2, file_bytes=FILE),
                   rule.Held(model_id="-bad", digest="sha256:" + "99" * 32, replicas=2)]
        b = mesh.add("b")
        await mesh.start_all()
        await trio.sleep(1)
        assert len(b.running) == 1  # the refused one was skipped, the others queue
        await trio.sleep(2 * PULL_S + 2 * INTERVAL_S)
        assert {h.digest for h in b.held} == {DIGEST, OTHER}
        assert "not replicating sha256:9999" in caplog.text
