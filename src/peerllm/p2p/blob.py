"""The /peerllm/blob/1.0.0 server: model files to the peers allowed to download them
(protocols/blob.md). The client is ``blob_client`` (re-exported here).

A ref resolves only through the ``BlobCatalog`` (mesh/blobs.py over the store, the
registry and downloads in flight): no path ever comes from the peer, and the server opens
only the path of the entry the catalog returned. Files are opened per request and read
with ``os.pread`` in worker threads; a file that changed under us is reported
(``internal``) and never served half. Chunks go over the TLS side channel when both
sides allow it (p2p.sidechannel), else in-stream.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import trio

from ..errors import PeerConnectionLost, PeerError, PeerTimeout, RemoteProtocolError
from ..scheduling.ratelimit import RateLimiter
from ..security_events import PeerLimitHook
from ..wire import blob as wb
from .infer import REQUEST_READ_TIMEOUT_S
from .limits import PeerStreams
from .sidechannel import IO_TIMEOUT_S, SideCertificate, SideConnection, SideListener
from .streams import CLOSE_GRACE_S, ByteStream, receive_event

logger = logging.getLogger(__name__)

_UPLOADS: Final = "uploads"  # the one key of the upload bucket: the cap is over all peers


@dataclass(frozen=True, kw_only=True)
class BlobEntry:
    """A file the catalog lets us serve: its manifest, where it is, what model it is.

    ``have`` says which chunks are on disk (a download in progress); None = all.
    """

    manifest: wb.Manifest
    path: Path
    meta: wb.ModelMeta | None = None
    have: Callable[[int], bool] | None = None


class BlobCatalog(Protocol):
    """What this node may serve, by ref."""

    def lookup(self, ref: str) -> BlobEntry | None:
        """The entry for ``ref`` ("sha256:…" or a model id; never a path), or None."""
        ...


class _FileChanged(Exception):
    """Our file is not the one the manifest describes any more (size or length)."""


class _Failed(Exception):
    """A request we answer with an error frame; ``error`` is that frame."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.error = wb.Error(code=code, message=message, retry_after_ms=retry_after_ms)


class BlobServer:
    """Serves blob streams; one per node.

    Args:
        catalog: resolves refs; the only source of paths.
        may_download: whether a peer may download from us (``models.share``).
        max_streams_per_peer: blob streams served at once to one peer (more: ``busy``).
        upload_limit_bps: bytes/s over all uploads together; None = no cap.
        side_channel: offer the TLS side channel (``models.side_channel``).
        self_peer_id: our peer id (logs).
        side_channel_host: the IP to listen on for side channels: the one the libp2p host
            listens on. A wildcard (0.0.0.0, ::) is offered as "" (the client dials the
            address it reaches us at); None = no side channel.
    """

    def __init__(self, *, catalog: BlobCatalog, may_download: Callable[[str], bool],
                 max_streams_per_peer: int, upload_limit_bps: float | None,
                 side_channel: bool, self_peer_id: str, side_channel_host: str | None = None,
                 on_limited: PeerLimitHook | None = None) -> None:
        self._catalog = catalog
        self._may_download = may_download
        self._streams = PeerStreams(what="blob", max_per_peer=max_streams_per_peer,
                                    on_limited=on_limited)
        self._limiter = None if upload_limit_bps is None else \
            RateLimiter(upload_limit_bps, burst=upload_limit_bps, max_keys=1)
        self._side_host = side_channel_host if side_channel else None
        self._self = self_peer_id
        self._cert: SideCertificate | None = None
        self._cert_lock = trio.Lock()
        self._stats = dict.fromkeys(("streams", "bytes_sent", "chunks_sent", "offers",
                                     "side_channel", "in_stream", "refused", "busy",
                                     "not_found", "failed"), 0)

    def statistics(self) -> dict[str, int]:
        """Counters since start: streams, bytes and chunks sent, side channels offered,
        ranges by path, refusals by kind (refused, busy, not_found, failed), and the
        streams active now."""
        return {**self._stats, "active": self._streams.statistics().active_streams}

    async def handle(self, stream: ByteStream) -> None:
        """Serve one stream: a ``describe`` or a ``get``.

        Raises:
            RemoteProtocolError: the client broke the protocol (after we told it why).
            PeerTimeout: no request within REQUEST_READ_TIMEOUT_S.
            PeerConnectionLost: the stream broke.
        """
        decoder = wb.RequestDecoder()
        req = await self._read_request(stream, decoder)
        if req is None:
            return
        self._stats["streams"] += 1
        try:
            with self._admitted(stream.peer_id):
                if isinstance(req, wb.Describe):
                    await _send_last(stream, wb.encode_answer(self._describe(req)))
                elif isinstance(req, wb.Get):
                    await self._get(stream, decoder, req)
                else:
                    _refuse_fallback()
        except _Failed as failed:
            self._count(failed.error.code)
            logger.debug("blob %s from %s: %s", type(req).__name__, stream.peer_id,
                         failed.error.message)
            await _send_last(stream, wb.encode_answer(failed.error))
        await stream.aclose()

    def _count(self, code: str) -> None:
        self._stats[code if code in ("refused", "busy", "not_found") else "failed"] += 1

    async def _read_request(self, stream: ByteStream, decoder: wb.RequestDecoder
                            ) -> wb.Request | None:
        with trio.move_on_after(REQUEST_READ_TIMEOUT_S):
            try:
                event = await receive_event(stream, decoder.feed, decoder.next_event)
            except RemoteProtocolError as exc:
                self._stats["failed"] += 1
                await _send_last(stream, wb.encode_answer(wb.error_for_violation(exc)))
                raise
            return None if event is wb.CLOSED else event  # type: ignore[return-value]
        raise PeerTimeout(stream.peer_id, "no blob request within the read timeout",
                          phase="call")

    def _admitted(self, peer: str) -> AbstractContextManager[None]:
        if not self._may_download(peer):
            raise _Failed("refused", "this node does not share its model files with you "
                          "(models.share)")
        refusal = self._streams.refusal(peer)
        if refusal is not None:
            raise _Failed("busy", refusal.message, refusal.retry_after_ms)
        return self._streams.serving(peer)

    def _lookup(self, ref: str) -> BlobEntry:
        try:
            entry = self._catalog.lookup(ref)
        except Exception as exc:  # the catalog's bug must not end the node's serving
            logger.exception("blob catalog lookup of %r failed", ref)
            raise _Failed("internal", f"our catalog failed: {type(exc).__name__}") from exc
        if entry is None:
            raise _Failed("not_found", f"no file {ref!r} here")
        return entry

    def _describe(self, req: wb.Describe) -> wb.Described:
        entry = self._lookup(req.ref)
        m = entry.manifest
        have = None if entry.have is None else wb.bitmap_of(m.count, entry.have)
        return wb.Described(manifest=m, meta=entry.meta, have=have)

    def _check_range(self, req: wb.Get, entry: BlobEntry) -> None:
        m = entry.manifest
        if (req.chunk_bytes, req.size) != (m.chunk_bytes, m.size):
            raise _Failed("bad_request", f"{req.ref} is {m.size} bytes in {m.chunk_bytes}-byte "
                          f"chunks, not {req.size} in {req.chunk_bytes}")
        if req.first + req.count > m.count:
            raise _Failed("bad_request", f"chunks {req.first}..{req.first + req.count - 1} "
                          f"are past the last chunk, {m.count - 1}")
        if entry.have is not None:
            missing = [i for i in range(req.first, req.first + req.count) if not entry.have(i)]
            if missing:
                raise _Failed("not_found", f"chunk {missing[0]} is not here yet")

    async def _get(self, stream: ByteStream, decoder: wb.RequestDecoder, req: wb.Get) -> None:
        entry = self._lookup(req.ref)
        self._check_range(req, entry)
        try:
            fd = await trio.to_thread.run_sync(_open, entry)
        except (OSError, _FileChanged) as exc:
            logger.warning("cannot serve %s from %s: %s", req.ref, entry.path, exc)
            raise _Failed("internal", "our copy of the file cannot be read") from exc
        try:
            conn = await self._side_channel(stream, decoder, req)
            try:
                sent = await self._send_range(stream, conn, fd, entry.manifest, req,
                                              fd_complete=entry.have is None)
            finally:
                if conn is not None:
                    conn.close()
        except _FileChanged as exc:
            logger.warning("%s changed while serving it: %s", entry.path, exc)
            raise _Failed("internal", "our copy of the file changed while we sent it") from exc
        finally:
            os.close(fd)
        await _send_last(stream, wb.encode_answer(wb.Done(chunks=sent)))

    async def _certificate(self) -> SideCertificate:
        async with self._cert_lock:
            if self._cert is None:
                self._cert = await trio.to_thread.run_sync(SideCertificate.generate)
            return self._cert

    async def _side_channel(self, stream: ByteStream, decoder: wb.RequestDecoder,
                            req: wb.Get) -> SideConnection | None:
        """The client's side-channel connection, or None to send in-stream."""
        if self._side_host is None or not req.side_channel:
            return None
        try:
            listener = await SideListener.open(self._side_host, await self._certificate(),
                                               peer_id=stream.peer_id)
        except OSError as exc:
            logger.warning("no side channel on %s: %s", self._side_host, exc)
            return None
        with listener:
            offer_host = "" if self._side_host in ("0.0.0.0", "::") else self._side_host
            await stream.send_all(wb.encode_answer(wb.Offer(
                host=offer_host, port=listener.port, cert_sha256=listener.cert_sha256,
                token=listener.token)))
            self._stats["offers"] += 1
            return await _first_of(listener, stream, decoder)

    async def _pace(self, nbytes: int) -> None:
        if self._limiter is None:
            return
        debt = -self._limiter.available(_UPLOADS, trio.current_time())
        if debt > 0:
            await trio.sleep(debt / self._limiter.rate_per_s)
        self._limiter.charge(_UPLOADS, trio.current_time(), nbytes)

    async def _send_range(self, stream: ByteStream, conn: SideConnection | None, fd: int,
                          m: wb.Manifest, req: wb.Get, *, fd_complete: bool) -> int:
        self._stats["side_channel" if conn is not None else "in_stream"] += 1
        size = m.size if fd_complete else None
        for index in range(req.first, req.first + req.count):
            offset, length = m.span(index)
            await self._pace(length)
            # Not abandoned on cancel, unlike the socket calls: ``fd`` is closed after us.
            data = await trio.to_thread.run_sync(_pread, fd, offset, length, size)
            if conn is not None:
                await conn.call(functools.partial(_send, data), what=f"send of chunk {index}")
            else:
                await _send_stalling(stream, wb.encode_answer(
                    wb.ChunkHeader(index=index, length=length)), index)
                for at in range(0, length, wb.IN_STREAM_WRITE_BYTES):
                    await _send_stalling(stream, data[at:at + wb.IN_STREAM_WRITE_BYTES], index)
            self._stats["bytes_sent"] += length
            self._stats["chunks_sent"] += 1
        return req.count


async def _first_of(listener: SideListener, stream: ByteStream, decoder: wb.RequestDecoder
                    ) -> SideConnection | None:
    """The dialled connection, or None once the client sends ``fallback`` (or the
    listener times out). Raises RemoteProtocolError for anything else on the stream."""
    got: list[SideConnection | None] = []
    other: list[object] = []
    try:
        async with trio.open_nursery() as nursery:
            async def accept() -> None:
                try:
                    got.append(await listener.accept())
                except PeerTimeout:
                    got.append(None)
                nursery.cancel_scope.cancel()

            async def fallback() -> None:
                other.append(await receive_event(stream, decoder.feed, decoder.next_event))
                nursery.cancel_scope.cancel()

            nursery.start_soon(accept)
            nursery.start_soon(fallback)
    except BaseException:  # cancelled from outside (or the stream broke): it is ours to close
        for conn in got:
            if conn is not None:
                conn.close()
        raise
    if other and not isinstance(other[0], wb.Fallback):
        for conn in got:
            if conn is not None:
                conn.close()
        if other[0] is wb.CLOSED:
            raise PeerConnectionLost(stream.peer_id, "left before using the side channel")
        raise RemoteProtocolError(f"expected fallback after an offer, got "
                                  f"{type(other[0]).__name__}")
    return got[0] if got else None


def _refuse_fallback() -> None:
    raise _Failed("bad_request", "a stream starts with describe or get, not fallback")


def _check_file(entry: BlobEntry, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _FileChanged(f"{entry.path} is not a regular file")
    if entry.have is None and st.st_size != entry.manifest.size:
        raise _FileChanged(f"{st.st_size} bytes, the manifest says {entry.manifest.size}")


def _open(entry: BlobEntry) -> int:
    """Open the catalog's path (blocking); a complete file must have the manifest's size."""
    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check_file(entry, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _send(data: bytes, sock: ssl.SSLSocket) -> None:
    sock.sendall(data)


def _pread(fd: int, offset: int, length: int, size: int | None) -> bytes:
    """Chunk bytes at ``offset`` (blocking): the whole chunk, or _FileChanged when the
    file is shorter, or (``size`` given: a complete file) no longer ``size`` bytes."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise _FileChanged(f"{len(data)} bytes at {offset}, wanted {length}")
    if size is not None and (now := os.fstat(fd).st_size) != size:
        raise _FileChanged(f"now {now} bytes, the manifest says {size}")
    return data


async def _send_stalling(stream: ByteStream, data: bytes, index: int) -> None:
    """One in-stream write, which must make progress within IO_TIMEOUT_S (as a side
    channel's must): a client that stops reading would otherwise hold this stream, its
    file and a chunk in memory for ever (the blob handler has no overall timeout).

    Raises:
        PeerTimeout: the client read nothing for IO_TIMEOUT_S.
    """
    with trio.move_on_after(IO_TIMEOUT_S):
        await stream.send_all(data)
        return
    raise PeerTimeout(stream.peer_id, f"read none of chunk {index} for {IO_TIMEOUT_S:g} s",
                      phase="call")


async def _send_last(stream: ByteStream, data: bytes) -> None:
    """Send a final frame if the peer is still there to read it."""
    with trio.move_on_after(CLOSE_GRACE_S):
        try:
            await stream.send_all(data)
        except PeerError:
            logger.debug("could not answer %s's blob stream", stream.peer_id)


from .blob_client import BlobClient, PeerSource  # noqa: E402  # the client, re-exported

__all__ = ["BlobCatalog", "BlobClient", "BlobEntry", "BlobServer", "PeerSource"]
