"""The small ports the Pulls service (mesh/pulls.py) is built over.

Each names only what Pulls calls: where the file's holders are (``ProviderFinder``), how
to ask a peer for it (``BlobPeers``, p2p.blob.BlobClient), the hub (``Hub``, over
transfer.http), the download engine (``OpenDownload``, transfer.swarm.SwarmDownload) and
what makes a finished file a served model (``Installer``: the store, the registry and the
announcement). node.py gives the real ones; tests pass small fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..transfer.ports import ChunkSource, Progress, ProgressSink
from ..wire.blob import Manifest, ModelMeta


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """A peer that says it holds a model file (its node-info, or a DHT provider record)."""

    peer_id: str
    model_id: str | None = None
    digest: str | None = None  # None: the peer did not say (an older node)


class ProviderFinder(Protocol):
    async def find(self, ref: str) -> list[Holder]:
        """Peers holding ``ref`` (a ``sha256:`` digest or a model id): those the peer
        registry lists first, else the DHT's providers once connected. Never raises for
        a peer's failure (it is just not listed)."""
        ...


class BlobPeers(Protocol):
    """What Pulls asks of peers over /peerllm/blob/1.0.0 (p2p.blob.BlobClient)."""

    async def describe(self, peer_id: str, ref: str) -> tuple[Manifest, ModelMeta | None]:
        """Raises SourceFailed (not_found / refused / busy / bad_answer / gone)."""
        ...

    def source(self, peer_id: str, ref: str) -> ChunkSource: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class HubTarget:
    """Where a URL or ``hf://`` reference leads: the file's URL and what the hub says of it."""

    url: str
    digest: str | None = None  # the hub's LFS sha256, when it says
    size: int | None = None
    filename: str = ""


class Hub(Protocol):
    """URLs and the Hugging Face hub (transfer.http)."""

    async def resolve(self, ref: str) -> HubTarget:
        """Raises TransferError (SourceFailed with the hub's fault) when it cannot."""
        ...

    def source(self, url: str) -> ChunkSource: ...


class Download(Protocol):
    """One file's download (transfer.swarm.SwarmDownload)."""

    @property
    def manifest(self) -> Manifest | None: ...

    @property
    def partial_path(self) -> Path: ...

    def have(self, index: int) -> bool: ...

    def progress(self) -> Progress: ...

    async def run(self) -> Manifest:
        """Raises NoSource / DigestMismatch / NotEnoughSpace; cancelled: resumable."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadPlan:
    """What one download fetches and from whom (node.py turns it into a SwarmDownload)."""

    digest: str | None  # None: a URL whose digest is not known before the end
    url: str | None  # the hub's URL, for a URL pull's partial name
    sources: Sequence[ChunkSource]
    fallback: Sequence[ChunkSource]
    manifest: Manifest | None
    on_progress: ProgressSink


OpenDownload = Callable[[DownloadPlan], Download]


class StoredEntry(Protocol):
    """A model file the node keeps (transfer.store.StoredModel's fields Pulls reads)."""

    @property
    def id(self) -> str: ...

    @property
    def digest(self) -> str: ...

    @property
    def size(self) -> int: ...


class Installer(Protocol):
    """Turns a verified file into a served, advertised model, and back."""

    def present(self, digest: str) -> StoredEntry | None:
        """The model already holding this file (registered or stored), else None."""
        ...

    def serving(self, model_id: str) -> StoredEntry | None:
        """The model this node serves under ``model_id`` (whatever its file), else None."""
        ...

    async def install(self, *, digest: str, size: int, meta: ModelMeta, source: str,
                      manifest: Manifest | None = None) -> StoredEntry:
        """Record the file under ``meta.id`` in the store, register it and announce it
        (``manifest``: the file's, known from the download, cached for serving it)."""
        ...
