"""Small fakes of the Pulls service's ports (mesh/pull_ports.py), following their contracts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from peerllm.errors import NoSource, SourceFailed
from peerllm.mesh.pull_ports import Download, DownloadPlan, Holder, HubTarget, StoredEntry
from peerllm.transfer.ports import ChunkSource, Deliver, Progress
from peerllm.wire import blob as wb

DATA = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB chunks
MANIFEST = wb.manifest_of(DATA, chunk_bytes=wb.MIN_CHUNK_BYTES)


@dataclass(frozen=True, kw_only=True)
class Entry:
    id: str
    digest: str
    size: int
    source: str = ""


class Finder:
    def __init__(self, holders: dict[str, list[Holder]] | None = None) -> None:
        self.holders = holders or {}
        self.asked: list[str] = []

    async def find(self, ref: str) -> list[Holder]:
        self.asked.append(ref)
        return list(self.holders.get(ref, []))


@dataclass
class FakeSource:
    label: str
    kind: Literal["peer", "http"] = "peer"

    async def manifest(self) -> wb.Manifest | None:
        return MANIFEST

    async def fetch(self, first: int, count: int, *, chunk_bytes: int, size: int,
                    deliver: Deliver) -> None:
        for i in range(first, first + count):
            await deliver(i, DATA[i * chunk_bytes:(i + 1) * chunk_bytes])


class Peers:
    """Describes MANIFEST for the peers in ``holding``; refuses the others."""

    def __init__(self, holding: Sequence[str], meta: wb.ModelMeta | None = None) -> None:
        self.holding = set(holding)
        self.meta = meta

    async def describe(self, peer_id: str, ref: str) -> tuple[wb.Manifest, wb.ModelMeta | None]:
        if peer_id not in self.holding:
            raise SourceFailed(peer_id, "not_found", f"does not hold {ref}")
        return MANIFEST, self.meta

    def source(self, peer_id: str, ref: str) -> ChunkSource:
        return FakeSource(peer_id)


class Hub:
    def __init__(self, digest: str | None = None) -> None:
        self.digest = digest

    async def resolve(self, ref: str) -> HubTarget:
        return HubTarget(url=ref.replace("hf://", "https://hub.example/"), digest=self.digest,
                         size=len(DATA), filename=ref.rsplit("/", 1)[-1])

    def source(self, url: str) -> ChunkSource:
        return FakeSource(url, kind="http")


@dataclass
class FakeDownload:
    """Publishes a few progress steps, then waits for ``gate`` (when given)."""

    plan: DownloadPlan
    gate: trio.Event | None
    fail: bool = False
    manifest: wb.Manifest | None = None
    partial_path: Path = Path("/nowhere.partial")
    verified: set[int] = field(default_factory=set)

    def have(self, index: int) -> bool:
        return index in self.verified

    def progress(self) -> Progress:
        return Progress(digest=MANIFEST.digest, state="downloading", total=MANIFEST.size,
                        completed=len(self.verified) * MANIFEST.chunk_bytes)

    async def run(self) -> wb.Manifest:
        if not self.plan.sources:
            raise NoSource("no sources")
        self.manifest = MANIFEST
        self.verified.add(0)
        self.plan.on_progress(self.progress())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise NoSource("every source failed", digest=MANIFEST.digest,
                           reasons={s.label: "bad_chunk" for s in self.plan.sources})
        self.verified.update(range(MANIFEST.count))
        self.plan.on_progress(Progress(digest=MANIFEST.digest, state="verifying",
                                       total=MANIFEST.size, completed=MANIFEST.size))
        return MANIFEST


class Downloads:
    def __init__(self, *, gate: trio.Event | None = None, fail: bool = False) -> None:
        self.gate = gate
        self.fail = fail
        self.opened: list[FakeDownload] = []

    def __call__(self, plan: DownloadPlan) -> Download:
        d = FakeDownload(plan, self.gate, self.fail)
        self.opened.append(d)
        return d


class Installer:
    def __init__(self, present: Sequence[Entry] = ()) -> None:
        self.entries = {e.digest: e for e in present}
        self.installed: list[tuple[str, wb.ModelMeta, str]] = []

    def present(self, digest: str) -> StoredEntry | None:
        return self.entries.get(digest)

    def serving(self, model_id: str) -> StoredEntry | None:
        return next((e for e in self.entries.values() if e.id == model_id), None)

    async def install(self, *, digest: str, size: int, meta: wb.ModelMeta, source: str,
                      manifest: wb.Manifest | None = None) -> StoredEntry:
        entry = self.entries[digest] = Entry(id=meta.id, digest=digest, size=size,
                                             source=source)
        self.installed.append((digest, meta, source))
        return entry
