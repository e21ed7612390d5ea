"""The Pulls service: model downloads this node runs, from peers, a URL or the hub.

``Pulls.start(ref)`` returns a :class:`Transfer` at once and runs the download in Pulls'
own nursery, so a client that goes away (Ctrl-C, a dropped HTTP stream) leaves it
running; a second start for the same file joins the first. A finished file is installed
(stored, registered, announced) through the ``Installer`` port. The ports are in
mesh/pull_ports.py.

What a ref names:
- a model id: the peers that serve it; the digest most of them advertise is the file;
- a ``sha256:`` digest: the peers that hold that file;
- an ``http(s)://`` URL or ``hf://OWNER/REPO/FILE``: the hub; when peers hold the same
  digest (``digest=``, or the hub's LFS sha256) they are the sources and the hub is the
  fallback.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Final, Literal

import trio

from ..errors import NoSource, TransferError
from ..transfer.http import parse_source, shown_url
from ..transfer.ports import ChunkSource, Progress
from ..wire import blob as wb
from .describing import describe_holders
from .naming import install_id, plain_name, stem
from .pull_ports import (
    BlobPeers,
    Download,
    DownloadPlan,
    Holder,
    Hub,
    Installer,
    OpenDownload,
    ProviderFinder,
    StoredEntry,
)

logger = logging.getLogger(__name__)

RECENT: Final = 20
"""Finished transfers kept for ``transfers()`` (GET /v1/transfers)."""
MAX_REF_CHARS: Final = 2048

RefKind = Literal["model", "digest", "hub"]
Origin = Literal["user", "replication"]


def ref_kind(ref: str) -> RefKind:
    """What ``peerllm pull REF`` names (ValueError naming ``model`` when nothing)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("model: expected a model id, a sha256: digest or a URL")
    if len(ref) > MAX_REF_CHARS:
        raise ValueError(f"model: longer than {MAX_REF_CHARS} characters")
    problem = wb.digest_problem(ref.strip())
    if problem is not None:
        raise ValueError(f"model: {ref.strip()[:80]!r}: {problem}")
    try:
        kind, _ = parse_source(ref)
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from None
    if kind in ("url", "hf"):
        return "hub"
    return "digest" if kind == "digest" else "model"


class Transfer:
    """One download, as its subscribers and ``GET /v1/transfers`` see it."""

    def __init__(self, *, seq: int, ref: str, digest: str | None, model_id: str | None,
                 origin: Origin) -> None:
        self.seq = seq
        self.id = f"t{seq}"
        self.ref = ref
        self.shown = shown_url(ref)  # for logs and listings: a URL's secrets left out
        self.digest = digest
        self.model_id = model_id
        self.origin: Origin = origin
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.progress = Progress(digest=digest, state="resolving", total=None, completed=0)
        self.done = trio.Event()
        self.error: TransferError | None = None
        self.result: StoredEntry | None = None
        self._version = 0
        self._changed = trio.Event()

    @property
    def resolved(self) -> bool:
        """Past finding the file (downloading or beyond), or over."""
        return self.done.is_set() or self.progress.state != "resolving"

    async def wait(self) -> StoredEntry:
        """The installed model once done. Raises the transfer's TransferError."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None  # done without an error means installed
        return self.result

    async def wait_resolved(self) -> None:
        while not self.resolved:
            await self._changed.wait()

    def subscribe(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Progress]]:
        """``async with t.subscribe() as updates: async for p in updates``: the latest
        progress whenever it changes, ending after the last. A slow reader skips
        intermediate values; it never slows the download."""
        return self._subscription()

    @asynccontextmanager
    async def _subscription(self) -> AsyncIterator[trio.MemoryReceiveChannel[Progress]]:
        send, receive = trio.open_memory_channel[Progress](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, send)
            try:
                async with receive:
                    yield receive
            finally:
                nursery.cancel_scope.cancel()

    async def _pump(self, send: trio.MemorySendChannel[Progress]) -> None:
        async with send, aclosing(self.changes()) as changes:
            async for progress in changes:
                try:
                    await send.send(progress)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the subscriber left

    async def changes(self) -> AsyncGenerator[Progress, None]:
        """The latest progress whenever it changed since the last one taken, ending after
        the last; no task, so safe to iterate from an HTTP response's generator."""
        seen = -1
        while True:
            if seen != self._version:
                seen = self._version
                yield self.progress
            elif self.done.is_set():
                return
            else:
                await self._changed.wait()

    def publish(self, progress: Progress) -> None:
        self.progress = progress
        if progress.digest is not None and self.digest is None:
            self.digest = progress.digest
        self._version += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def finish(self, *, result: StoredEntry | None = None,
               error: TransferError | None = None) -> None:
        p = self.progress
        if error is not None:
            self.error = error
            self.publish(Progress(digest=self.digest, state="failed", total=p.total,
                                  completed=p.completed, resumed=p.resumed,
                                  sources=p.sources, error=error.message))
        else:
            self.result = result
            size = result.size if result is not None else p.total
            self.publish(Progress(digest=self.digest, state="done", total=size,
                                  completed=size or 0, resumed=p.resumed, sources=p.sources))
        self.finished_at = time.time()
        self.done.set()


class Pulls:
    """Runs and lists this node's downloads (see the module docstring)."""

    def __init__(self, *, finder: ProviderFinder, peers: BlobPeers, hub: Hub,
                 open_download: OpenDownload, installer: Installer,
                 recent: int = RECENT) -> None:
        self._finder = finder
        self._peers = peers
        self._hub = hub
        self._open_download = open_download
        self._installer = installer
        self._running: dict[str, Transfer] = {}
        self._downloads: dict[str, Download] = {}
        self._recent: deque[Transfer] = deque(maxlen=recent)
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the downloads' nursery until cancelled (partials stay resumable)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def start(self, ref: str, *, digest: str | None = None, model_id: str | None = None,
              origin: Origin = "user") -> Transfer:
        """Start (or join) the download ``ref`` names; returns at once.

        Raises:
            ValueError: ``ref``, ``digest`` or ``model_id`` is malformed (names the field).
            RuntimeError: the service is not running.
        """
        kind = ref_kind(ref)
        ref = ref.strip()
        if digest is not None:
            try:
                digest = wb.parse_digest(digest)
            except ValueError as exc:
                raise ValueError(f"digest: {exc}") from None
        elif kind == "digest":
            digest = wb.parse_digest(ref)
        if self._nursery is None:
            raise RuntimeError("Pulls.start before Pulls.run")
        for t in self._running.values():
            if (digest is not None and t.digest == digest) or t.ref == ref:
                return t
        t = Transfer(seq=next(self._ids), ref=ref, digest=digest,
                     model_id=model_id or (ref if kind == "model" else None),
                     origin=origin)
        self._running[t.id] = t
        self._nursery.start_soon(self._run, t, kind, name=f"pull {t.shown[:80]}")
        return t

    def transfers(self) -> list[Transfer]:
        """In flight first (oldest first), then the recently finished (newest first)."""
        return [*self._running.values(), *reversed(self._recent)]

    def pulling(self, digest: str) -> bool:
        return any(t.digest == digest for t in self._running.values())

    def downloads(self) -> list[tuple[Transfer, Download]]:
        """Downloads in flight with their engines (the blob catalog serves their chunks)."""
        return [(self._running[key], d) for key, d in self._downloads.items()
                if key in self._running]

    # -- one transfer ------------------------------------------------------------------

    async def _run(self, t: Transfer, kind: RefKind) -> None:
        try:
            t.finish(result=await self._pull(t, kind))
        except TransferError as exc:
            logger.info("pull %s failed: %s", t.shown, exc.message)
            t.finish(error=exc)
        except Exception as exc:  # a bug of ours: the node keeps serving, the log has it
            logger.exception("pull %s failed", t.shown)
            t.finish(error=TransferError(f"internal error ({type(exc).__name__}); "
                                         "the node's log has the details", digest=t.digest))
        finally:
            self._running.pop(t.id, None)
            self._downloads.pop(t.id, None)
            self._recent.append(t)

    async def _pull(self, t: Transfer, kind: RefKind) -> StoredEntry:
        url: str | None = None
        hub_name = ""
        if kind == "hub":
            target = await self._hub.resolve(t.ref)
            url, hub_name = target.url, target.filename
            t.digest = t.digest or target.digest
        holders: list[Holder] = []
        if kind == "model" and t.digest is None:
            holders = await self._finder.find(t.ref)
            if not holders:
                here = self._installer.serving(t.ref)
                if here is not None:  # nobody has another file of it: ours is the one
                    return here
                raise NoSource(f"no peer in the mesh serves the model {t.ref!r}")
            t.digest = _most_held(holders)
            holders = [h for h in holders if h.digest in (t.digest, None)]
        if t.digest is not None:
            present = self._installer.present(t.digest)
            if present is not None:
                return present
            if not holders:  # a digest, a URL's, or a model id pinned to a digest
                holders = await self._finder.find(t.digest)
        if not holders and url is None:
            raise NoSource(f"no peer in the mesh holds {t.digest}", digest=t.digest)
        manifest, meta, reasons = await describe_holders(self._peers, holders,
                                                          t.digest or t.ref)
        if t.origin == "replication":  # refused before a byte is fetched
            self._install_id(t, plain_name(meta.id) if meta is not None else None,
                             manifest.digest if manifest is not None else t.digest)
        if manifest is not None:
            t.digest = manifest.digest
            present = self._installer.present(manifest.digest)
            if present is not None:
                return present
            other = self._joinable(t)
            if other is not None:
                return await other.wait()
        peer_sources: list[ChunkSource] = [] if manifest is None else [
            self._peers.source(h.peer_id, manifest.digest) for h in holders
            if h.peer_id not in reasons]
        hub_sources = [self._hub.source(url)] if url is not None else []
        if not peer_sources and not hub_sources:
            raise NoSource(f"no holder of {t.digest or t.shown} could send it", digest=t.digest,
                           reasons=reasons)
        download = self._open_download(DownloadPlan(
            digest=t.digest, url=url, sources=peer_sources or hub_sources,
            fallback=hub_sources if peer_sources else (), manifest=manifest,
            on_progress=t.publish))
        self._downloads[t.id] = download
        done = await download.run()
        t.digest = done.digest
        p = t.progress
        t.publish(Progress(digest=done.digest, state="installing", total=done.size,
                           completed=done.size, resumed=p.resumed, sources=p.sources))
        offered = (plain_name(meta.id) if meta is not None else None) or stem(hub_name)
        model_id = self._install_id(t, offered, done.digest)
        assert model_id is not None  # the digest is known
        meta = wb.ModelMeta(id=model_id, type=meta.type, chat_format=meta.chat_format,
                            context_size=meta.context_size) if meta is not None \
            else wb.ModelMeta(id=model_id)
        source = shown_url(url) if url else ",".join(f"peer:{h.peer_id}" for h in holders
                                 if h.peer_id not in reasons)
        return await self._installer.install(digest=done.digest, size=done.size, meta=meta,
                                             source=source, manifest=done)

    def _install_id(self, t: Transfer, offered: str | None, digest: str | None) -> str | None:
        return install_id(named=t.model_id, offered=offered, digest=digest,
                          installer=self._installer, replication=t.origin == "replication")

    def _joinable(self, t: Transfer) -> Transfer | None:
        """Another running transfer of the same file (found once the digest is known)."""
        return next((o for o in self._running.values()
                     if o.seq < t.seq and o.digest == t.digest), None)


def _most_held(holders: list[Holder]) -> str | None:
    """The digest most holders advertise (ties: the smallest, so every node agrees)."""
    counts = Counter(h.digest for h in holders if h.digest is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min(d for d, n in counts.items() if n == top)

