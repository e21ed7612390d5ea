"""The ports of a download: where chunks come from and what the engine reports.

A ``ChunkSource`` is one place that can send a file's bytes: a peer over
/peerllm/blob/1.0.0 (p2p.blob.BlobClient's sources) or an HTTP(S) URL (transfer.http).
The swarm engine (transfer.swarm) asks several at once and checks every chunk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..wire.blob import Manifest

Deliver = Callable[[int, bytes], Awaitable[None]]
"""(chunk index, the chunk's bytes) -> None; called in order of index within a fetch."""


class ChunkSource(Protocol):
    """One place the file's bytes can come from."""

    @property
    def label(self) -> str:
        """Who this is, for progress and blame: a peer id, or ``https://host``."""
        ...

    @property
    def kind(self) -> Literal["peer", "http"]: ...

    async def manifest(self) -> Manifest | None:
        """The file's manifest as this source knows it; None when it cannot say the
        chunk digests (a plain HTTP server).

        Raises:
            SourceFailed: the source does not have the file, refused, or answered badly.
        """
        ...

    async def fetch(self, first: int, count: int, *, chunk_bytes: int, size: int,
                    deliver: Deliver) -> None:
        """Send chunks ``first`` .. ``first + count - 1`` of the file of ``size`` bytes
        cut in ``chunk_bytes`` chunks, calling ``deliver`` once per chunk, in order.

        The caller checks each chunk and bounds the time (a stall is its call).

        Raises:
            SourceFailed: refused, busy (``retry_after_s``), gone mid-way, or sent
                something that is not the chunk asked for.
        """
        ...


@runtime_checkable
class SizeHint(Protocol):
    """A source that can tell the file's size without a manifest (an HTTP server's
    Content-Length): what a download from plain HTTP sources cuts into chunks."""

    async def content_length(self) -> int | None: ...


State = Literal["resolving", "downloading", "verifying", "installing", "done", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceProgress:
    """One source's part in a download so far."""

    label: str
    kind: str  # "peer" or "http"
    bytes: int  # verified bytes it sent
    rate_bps: float  # recent rate, bytes/s
    state: Literal["active", "idle", "dropped"]
    reason: str | None = None  # why it was dropped


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """Where a download stands (``total`` None while the size is not known yet)."""

    digest: str | None
    state: State
    total: int | None
    completed: int  # verified bytes on disk, resumed ones included
    resumed: int = 0  # bytes that were already on disk when this run started
    rate_bps: float = 0.0
    eta_s: float | None = None
    sources: tuple[SourceProgress, ...] = ()
    error: str | None = None


ProgressSink = Callable[[Progress], None]
