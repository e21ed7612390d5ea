"""The download engine: one file from several sources at once, every chunk checked.

Each source runs in its own task in one nursery, asking ranges the planner
(scheduling.swarm) picks from its measured rate and round trip. Every chunk is checked
against the manifest (BLAKE3) before it is written; a source that sends a bad chunk, or
none for ``stall_timeout_s``, is dropped at once and its chunks go to the others. The
``fallback`` sources (the hub) join only once no primary source is left. Without a
manifest (plain HTTP) chunks cannot be checked one by one: they are fetched in order from
one source at a time and the whole-file digest decides. Hashing and file writes run in
worker threads, so the event loop keeps serving while 4 MiB chunks go by.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import trio

from ..errors import NoSource, SourceFailed, TransferError
from ..scheduling.swarm import SourceView, next_ask
from ..wire.blob import DEFAULT_CHUNK_BYTES, Manifest
from .intake import Intake
from .partial import PartialFile, open_partial, partial_path
from .ports import ChunkSource, Progress, ProgressSink, State
from .resolve import probe_size, resolve_manifest
from .sources import BadChunk, Fetch, InFlight, Source

PROGRESS_INTERVAL_S: Final = 0.25
"""on_progress at most ~4 times a second (state changes are reported at once)."""
MAX_BUSY_TRIES: Final = 3
DEFAULT_RETRY_AFTER_S: Final = 1.0
MAX_RETRY_AFTER_S: Final = 30.0


class SwarmDownload:
    """Download one file into ``target`` (resuming its partial), checked chunk by chunk."""

    def __init__(self, *, target: Path, sources: Sequence[ChunkSource],
                 expected_digest: str | None, manifest: Manifest | None = None,
                 fallback: Sequence[ChunkSource] = (), stall_timeout_s: float = 15.0,
                 on_progress: ProgressSink | None = None,
                 free_bytes: Callable[[Path], int] | None = None,
                 size: int | None = None) -> None:
        if manifest is not None and expected_digest is not None \
                and manifest.digest != expected_digest:
            raise ValueError(f"manifest is for {manifest.digest}, expected {expected_digest}")
        self.target = target
        self.manifest = manifest
        self.expected = expected_digest if manifest is None else manifest.digest
        self.stall_timeout_s = stall_timeout_s
        self._on_progress = on_progress
        self._free_bytes = free_bytes or (lambda p: shutil.disk_usage(p.parent).free)
        self._size = manifest.size if manifest is not None else size
        self._chunk_bytes = manifest.chunk_bytes if manifest is not None else DEFAULT_CHUNK_BYTES
        self._sources = [Source(s, primary=True) for s in sources]
        self._standby = [Source(s, primary=False) for s in fallback]
        self._state: State = "resolving"
        self._error: str | None = None
        self._partial: PartialFile | None = None
        self._intake: Intake | None = None
        self._in_flight = InFlight()
        self._changed = trio.Event()
        self._last_emit = -math.inf
        self._nursery: trio.Nursery | None = None
        self._fatal: OSError | None = None

    @property
    def partial_path(self) -> Path:
        return partial_path(self.target)

    def have(self, index: int) -> bool:
        """Chunk ``index`` is verified on disk (peers may be served it already)."""
        return self._intake is not None and self._intake.has(index)

    async def run(self) -> Manifest:
        """Download, check and install the file; returns its manifest.

        Raises:
            NoSource: no source could give the file (``reasons`` says why each failed).
            DigestMismatch: the assembled file is not the one expected; nothing installed.
            NotEnoughSpace: the disk cannot hold the missing bytes.
        Cancelled leaves the partial to be resumed by the next SwarmDownload.
        """
        try:
            manifest = await self._run_mapped()
        except TransferError as exc:
            self._state, self._error = "failed", str(exc)
            self._emit(force=True)
            raise
        finally:
            if self._partial is not None:
                self._partial.close()
        self._state = "done"
        self._emit(force=True)
        return manifest

    async def _run_mapped(self) -> Manifest:
        try:
            return await self._run()
        except OSError as exc:  # our disk, not a source's fault: the message says where
            raise TransferError(f"{self.target.parent}: cannot write the download: "
                                f"{exc.strerror or exc}", digest=self.expected) from exc

    async def _run(self) -> Manifest:
        if self.manifest is None:
            await self._resolve()
        intake = await self._open()
        partial = intake.partial
        self._state = "downloading"
        self._emit(force=True)
        if not intake.complete:
            await self._download(intake)
        if not intake.complete:
            reasons = {s.label: s.reason or "gave up" for s in self._all()}
            raise NoSource(f"no source left for {partial.count - len(partial.digests)} "
                           f"of {partial.count} chunks", digest=self.expected, reasons=reasons)
        self._state = "verifying"
        self._emit(force=True)
        actual = await intake.digest()
        self._state = "installing"
        self._emit(force=True)
        await trio.to_thread.run_sync(partial.install, actual)
        if self.manifest is None:
            chunks = tuple(partial.digests[i] for i in range(partial.count))
            self.manifest = Manifest(digest=actual, size=partial.size,
                                     chunk_bytes=partial.chunk_bytes, chunks=chunks)
        return self.manifest

    async def _resolve(self) -> None:
        for group in (self._sources, self._standby):
            live = [s.source for s in group if s.state != "dropped"]
            found = await resolve_manifest(live, expected=self.expected,
                                           timeout_s=self.stall_timeout_s, drop=self._drop_label)
            if found is not None:
                self.manifest, self._size = found, found.size
                self._chunk_bytes = found.chunk_bytes
                return
            if any(s.state != "dropped" for s in group):
                break  # sources without manifests (plain HTTP) are left: use them
        if self._size is None:
            self._size = await probe_size([s.source for s in self._all()
                                           if s.state != "dropped"], drop=self._drop_label)
        if self._size is None:
            reasons = {s.label: s.reason or "cannot tell the file's size" for s in self._all()}
            raise NoSource("no source gave the file's manifest or size", digest=self.expected,
                           reasons=reasons)

    async def _open(self) -> Intake:
        assert self._size is not None
        size, chunk_bytes = self._size, self._chunk_bytes
        self.target.parent.mkdir(parents=True, exist_ok=True)
        partial = await trio.to_thread.run_sync(lambda: open_partial(
            self.target, size=size, chunk_bytes=chunk_bytes, expected=self.expected,
            manifest=self.manifest))
        self._partial = partial
        try:
            partial.check_space(await trio.to_thread.run_sync(self._free_bytes, self.target))
        except TransferError:
            if not partial.digests:
                partial.discard()
            raise
        if self.manifest is None and partial.manifest is not None:
            self.manifest = partial.manifest  # learnt by an earlier run of this download
        self._intake = Intake(partial, self.manifest)
        await self._intake.resume()  # a resumed prefix is read from disk and hashed once
        return self._intake

    async def _download(self, intake: Intake) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.manifest is None:
                # No chunk digests to check: one source at a time, in order.
                self._standby = self._sources + self._standby
                self._sources = []
                self._start_standby()
            else:
                for s in self._sources:
                    if s.state != "dropped":
                        nursery.start_soon(self._work, s, intake)
                self._start_standby()
        self._nursery = None
        if self._fatal is not None:
            raise self._fatal

    def _start_standby(self) -> None:
        intake = self._intake
        if self._nursery is None or intake is None \
                or any(s.state != "dropped" for s in self._sources):
            return
        take = self._standby[:1] if self.manifest is None else list(self._standby)
        for s in take:
            self._standby.remove(s)
            self._sources.append(s)
            if s.state != "dropped":
                self._nursery.start_soon(self._work, s, intake)
        if take and all(s.state == "dropped" for s in self._sources):
            self._start_standby()

    async def _work(self, s: Source, intake: Intake) -> None:
        partial = intake.partial
        while s.state != "dropped" and not intake.complete:
            ask = next_ask(self._view(s), count=partial.count, chunk_bytes=partial.chunk_bytes,
                           verified=partial.digests, assigned=self._in_flight.assigned,
                           start=intake.low, rates=self._rates())
            if ask is None:
                s.state = "idle"
                await self._changed.wait()
                continue
            s.state = "active"
            await self._fetch(s, intake, ask.first, ask.count)

    async def _fetch(self, s: Source, intake: Intake, first: int, count: int) -> None:
        fetch = Fetch(s, first, count, deadline=trio.current_time() + self.stall_timeout_s)
        self._in_flight.open(fetch)
        s.meter.start(trio.current_time())

        async def deliver(index: int, data: bytes) -> None:
            await self._deliver(fetch, intake, index, data)

        try:
            with fetch.scope:
                await s.source.fetch(first, count, chunk_bytes=intake.partial.chunk_bytes,
                                     size=intake.partial.size, deliver=deliver)
            if fetch.bad is not None:
                raise fetch.bad
            if fetch.scope.cancelled_caught and not fetch.superseded:
                self._drop(s, f"stalled: no chunk for {self.stall_timeout_s:g} s")
            elif fetch.remaining and not fetch.superseded and not fetch.scope.cancelled_caught:
                self._drop(s, f"gone: it ended the range before chunk {min(fetch.remaining)}")
            else:
                s.busy_tries = 0
        except BadChunk as bad:
            self._drop(s, bad.reason)
        except SourceFailed as exc:
            if fetch.bad is not None:
                self._drop(s, fetch.bad.reason)
            elif exc.fault == "busy" and s.busy_tries < MAX_BUSY_TRIES:
                s.busy_tries += 1
                self._release(fetch)
                s.state = "idle"
                await trio.sleep(min(exc.retry_after_s or DEFAULT_RETRY_AFTER_S,
                                     MAX_RETRY_AFTER_S))
            else:
                self._drop(s, f"{exc.fault}: {exc.message}")
        finally:
            fetch.closed = True
            self._release(fetch)

    async def _deliver(self, fetch: Fetch, intake: Intake, index: int, data: bytes) -> None:
        s = fetch.source
        if fetch.closed or index != fetch.next or index >= fetch.first + fetch.count:
            fetch.bad = BadChunk(index, f"sent chunk {index} out of order "
                                        f"(asked {fetch.first}..{fetch.first + fetch.count - 1})")
            raise fetch.bad
        now = trio.current_time()
        if fetch.next == fetch.first:
            s.note_rtt(now - fetch.started)
        fetch.next += 1
        fetch.scope.deadline = math.inf  # our own work below is not the source's stall
        if not isinstance(data, bytes):  # a source's reused buffer must not be held
            data = bytes(data)
        ours = not intake.has(index)  # else an endgame copy that came in first
        # Arrived before it is written: once on disk it must not make this fetch look
        # superseded (another source's chunk checks) while it is still being hashed.
        self._in_flight.arrived(fetch, index)
        if ours and not await self._accept(intake, index, data):
            fetch.bad = BadChunk(index, f"sent a bad chunk {index}")
            raise fetch.bad
        self._in_flight.delivered(fetch, index)
        if ours:
            s.bytes += len(data)
            self._in_flight.supersede(intake.partial.digests)
            self._notify()
        s.meter.add(trio.current_time(), len(data))
        fetch.scope.deadline = trio.current_time() + self.stall_timeout_s
        self._emit()

    async def _accept(self, intake: Intake, index: int, data: bytes) -> bool:
        try:
            return await intake.accept(index, data)
        except OSError as exc:  # our own disk failing ends the whole download
            self._fatal = exc
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            await trio.lowlevel.checkpoint()  # raises Cancelled: the nursery is cancelled
            raise

    def _release(self, fetch: Fetch) -> None:
        self._in_flight.release(fetch)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _drop_label(self, label: str, reason: str) -> None:
        for s in self._all():
            if s.label == label:
                self._drop(s, reason)

    def _drop(self, s: Source, reason: str) -> None:
        if s.state == "dropped":
            return
        s.state, s.reason = "dropped", reason
        self._notify()
        self._emit(force=True)
        self._start_standby()

    def _all(self) -> list[Source]:
        return self._sources + self._standby

    def _rates(self) -> dict[str, float | None]:
        now = trio.current_time()
        return {s.label: s.meter.rate(now) if s.bytes else None for s in self._sources}

    def _view(self, s: Source) -> SourceView:
        measured = s.meter.rate(trio.current_time()) if s.bytes else None
        # An HTTP source alone is asked the rest of the file in one request: a server
        # that ignores Range can serve only that (from chunk 0), and a stall or a bad
        # chunk still ends it at once.
        solo = s.kind == "http" and not any(
            o is not s and o.state != "dropped" for o in self._sources)
        return SourceView(s.label, measured, s.rtt_s, 0, solo=solo)

    def progress(self) -> Progress:
        """Where the download stands now."""
        now = trio.current_time()
        partial, intake = self._partial, self._intake
        completed = intake.completed if intake else 0
        rate = intake.meter.rate(now) if intake else 0.0
        total = self._size
        eta = (total - completed) / rate if total is not None and rate > 0 else None
        return Progress(
            digest=self.manifest.digest if self.manifest else self.expected,
            state=self._state, total=total, completed=completed,
            resumed=partial.resumed_bytes if partial else 0, rate_bps=rate, eta_s=eta,
            error=self._error,
            sources=tuple(s.progress(now) for s in self._all()))

    def _emit(self, *, force: bool = False) -> None:
        if self._on_progress is None:
            return
        now = trio.current_time()
        if force or now - self._last_emit >= PROGRESS_INTERVAL_S:
            self._last_emit = now
            self._on_progress(self.progress())

