"""The /peerllm/blob/1.0.0 client: a peer's manifest, and its chunks as a ChunkSource.

``PeerSource`` has the shape of transfer.ports.ChunkSource (structurally: p2p does not
import transfer). It only moves bytes: the download engine checks every chunk against
the manifest. Every failure is a ``SourceFailed`` naming the peer and the fault.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, Literal

import trio

from ..errors import (
    PeerConnectionLost,
    PeerError,
    PeerTimeout,
    PeerUnavailable,
    RemoteProtocolError,
    SourceFailed,
)
from ..wire import blob as wb
from .sidechannel import SideConnection, dial, recv_exact
from .streams import ByteStream, StreamOpener

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_S: Final = 10.0
"""How long the answer to a describe may take (a busy disk, a slow link)."""
ERROR_GRACE_S: Final = 2.0
"""How long to wait for the server's error frame after its side channel broke."""
SIDE_CHANNEL_RETRY_S: Final = 600.0
"""After a peer's side channel could not be dialled, ask it in-stream this long (a
firewall or NAT would cost the 2 s dial timeout on every range)."""
READ_BYTES: Final = 1024 * 1024
"""Most bytes asked of the stream in one read (yamux hands over what it has buffered)."""
FAULT_OF_CODE: Final = {"not_found": "not_found", "refused": "refused", "busy": "busy",
                        "bad_request": "bad_answer", "internal": "gone"}
"""Server error code -> SourceFailed fault (a bad_request: we disagree about the protocol)."""

MAX_REMEMBERED: Final = 1024
"""Peers whose failed side channel is remembered (forgotten all at once past this)."""

Deliver = Callable[[int, bytes], Awaitable[None]]
PeerIp = Callable[[str], "str | None"]


def _failed(peer: str, err: wb.Error, digest: str | None) -> SourceFailed:
    retry = None if err.retry_after_ms is None else err.retry_after_ms / 1000
    return SourceFailed(peer, FAULT_OF_CODE[err.code], f"{err.code}: {err.message}",
                        digest=digest, retry_after_s=retry)


class BlobClient:
    """Asks peers for model files over /peerllm/blob/1.0.0 (a stream per request).

    Args:
        opener: opens streams (the P2PHost).
        side_channel: dial side channels the servers offer (``models.side_channel``).
        peer_ip: the IP our connection to a peer uses (``sidechannel.connection_ip``
            bound to the host): side channels are dialled there whatever host the offer
            names; the offer's host is used only when this is None or says None.
    """

    def __init__(self, opener: StreamOpener, *, side_channel: bool,
                 peer_ip: PeerIp | None = None) -> None:
        self._opener = opener
        self._side_channel = side_channel
        self._peer_ip = peer_ip
        self._side_failed: dict[str, float] = {}  # peer -> when its dial failed

    async def describe(self, peer_id: str, ref: str) -> tuple[wb.Manifest, wb.ModelMeta | None]:
        """The manifest and model of ``ref`` ("sha256:…" or a model id) at ``peer_id``.

        Raises:
            SourceFailed: not_found / refused / busy / bad_answer / gone / stalled.
            LocalProtocolError: ``ref`` is not a digest or a model id (our caller's bug).
        """
        got = await self.described(peer_id, ref)
        return got.manifest, got.meta

    async def described(self, peer_id: str, ref: str) -> wb.Described:
        """``describe`` with the chunk bitmap (``have``: None when the peer has them all)."""
        frame = wb.encode_request(wb.Describe(ref=ref))
        digest = wb.parse_digest(ref) if wb.is_digest(ref) else None
        async with self._stream(peer_id, digest) as (stream, decoder):
            await stream.send_all(frame)
            answer = await _first_answer(stream, decoder, peer_id)
            if isinstance(answer, wb.Error):
                raise _failed(peer_id, answer, digest)
            if not isinstance(answer, wb.Described):
                raise SourceFailed(peer_id, "bad_answer", f"answered a describe with "
                                   f"{type(answer).__name__}", digest=digest)
            if digest is not None and answer.manifest.digest != digest:
                raise SourceFailed(peer_id, "bad_answer", f"asked for {digest}, described "
                                   f"{answer.manifest.digest}", digest=digest)
            return answer

    def source(self, peer_id: str, ref: str) -> PeerSource:
        """``ref`` at ``peer_id`` as a ChunkSource (kind "peer", label the peer id)."""
        return PeerSource(self, peer_id, ref)

    async def fetch(self, peer_id: str, ref: str, first: int, count: int, *, chunk_bytes: int,
                    size: int, deliver: Deliver) -> None:
        """Chunks ``first`` .. ``first + count - 1``, delivered in order (ChunkSource.fetch).

        Raises:
            SourceFailed: refused, busy (``retry_after_s``), not_found (not those chunks),
                gone mid-way, stalled, or bad_answer (not the chunks asked for).
        """
        end = first + count
        for start in range(first, end, wb.MAX_RANGE_CHUNKS):  # the server's range limit
            await self._fetch(peer_id, ref, start, min(wb.MAX_RANGE_CHUNKS, end - start),
                              chunk_bytes=chunk_bytes, size=size, deliver=deliver)

    async def _fetch(self, peer_id: str, ref: str, first: int, count: int, *,
                     chunk_bytes: int, size: int, deliver: Deliver) -> None:
        digest = wb.parse_digest(ref) if wb.is_digest(ref) else None
        lengths = {i: min(chunk_bytes, size - i * chunk_bytes) for i in range(first, first + count)}
        get = wb.Get(ref=ref, first=first, count=count, chunk_bytes=chunk_bytes, size=size,
                     side_channel=self._wants_side(peer_id))
        async with self._stream(peer_id, digest) as (stream, decoder):
            decoder.max_chunk_bytes = chunk_bytes
            await stream.send_all(wb.encode_request(get))
            # No timeout of our own: the upload cap may hold a chunk back, and the
            # download engine decides what a stall is.
            answer: object = await _next(stream, decoder, peer_id)
            if isinstance(answer, wb.Offer):
                conn = await self._dial(peer_id, answer)
                if conn is not None:
                    await _via_side(conn, stream, decoder, lengths, deliver, peer_id, digest)
                    return
                await stream.send_all(wb.encode_request(wb.Fallback()))
                answer = None
            await _in_stream(stream, decoder, answer, lengths, deliver, peer_id, digest)

    def _wants_side(self, peer_id: str) -> bool:
        if not self._side_channel:
            return False
        failed = self._side_failed.get(peer_id)
        if failed is not None and trio.current_time() - failed < SIDE_CHANNEL_RETRY_S:
            return False
        self._side_failed.pop(peer_id, None)
        return True

    async def _dial(self, peer_id: str, offer: wb.Offer) -> SideConnection | None:
        # The IP our connection to the peer uses wins over the offer's host: an offer must
        # not point our dial at another machine, or at our own loopback.
        host = (self._peer_ip(peer_id) if self._peer_ip is not None else None) or offer.host
        try:
            if not host:
                raise PeerUnavailable(peer_id, "the offer names no host and the "
                                      "connection's address is unknown")
            return await dial(host, offer.port, cert_sha256=offer.cert_sha256,
                              token=offer.token, peer_id=peer_id)
        except PeerError as exc:
            logger.info("side channel to %s not usable, chunks in-stream for %g s: %s",
                        peer_id, SIDE_CHANNEL_RETRY_S, exc)
            if len(self._side_failed) >= MAX_REMEMBERED:
                self._side_failed.clear()
            self._side_failed[peer_id] = trio.current_time()
            return None

    @asynccontextmanager
    async def _stream(self, peer_id: str, digest: str | None
                      ) -> AsyncIterator[tuple[ByteStream, wb.AnswerDecoder]]:
        """A blob stream to ``peer_id``; its failures as SourceFailed."""
        try:
            stream = await self._opener.open_stream(peer_id, wb.PROTOCOL_ID)
        except PeerError as exc:
            raise SourceFailed(peer_id, "gone", f"cannot open a blob stream: {exc}",
                               digest=digest) from exc
        finished = False
        try:
            yield stream, wb.AnswerDecoder()
            finished = True
        except PeerTimeout as exc:
            raise SourceFailed(peer_id, "stalled", str(exc), digest=digest) from exc
        except PeerError as exc:
            raise SourceFailed(peer_id, "gone", str(exc), digest=digest) from exc
        except RemoteProtocolError as exc:
            raise SourceFailed(peer_id, "bad_answer", str(exc), digest=digest) from exc
        finally:
            if finished:
                await stream.aclose()
            else:
                await stream.reset()


async def _first_answer(stream: ByteStream, decoder: wb.AnswerDecoder, peer: str
                        ) -> wb.Answer | wb.Chunk:
    with trio.move_on_after(ANSWER_TIMEOUT_S):
        return await _next(stream, decoder, peer)
    raise PeerTimeout(peer, f"no blob answer within {ANSWER_TIMEOUT_S:g} s", phase="call")


async def _next(stream: ByteStream, decoder: wb.AnswerDecoder, peer: str
                ) -> wb.Answer | wb.Chunk:
    while (event := decoder.next_event()) is wb.NEED_DATA:
        # Large reads: a chunk is megabytes, and each read costs a trip through yamux.
        decoder.feed(await stream.receive_some(READ_BYTES))
    if event is wb.CLOSED:
        raise PeerConnectionLost(peer, "closed the blob stream before its answer")
    return event


def _unexpected(peer: str, got: object, want: str, digest: str | None) -> SourceFailed:
    if isinstance(got, wb.Error):
        return _failed(peer, got, digest)
    name = f"chunk {got.index}" if isinstance(got, wb.Chunk) else type(got).__name__
    return SourceFailed(peer, "bad_answer", f"sent {name} where {want} was due", digest=digest)


async def _in_stream(stream: ByteStream, decoder: wb.AnswerDecoder, answer: object,
                     lengths: dict[int, int], deliver: Deliver, peer: str,
                     digest: str | None) -> None:
    for index, length in lengths.items():
        got = answer if answer is not None else await _next(stream, decoder, peer)
        answer = None
        if not isinstance(got, wb.Chunk) or got.index != index or len(got.data) != length:
            raise _unexpected(peer, got, f"chunk {index} ({length} bytes)", digest)
        await deliver(index, got.data)
    await _done(stream, decoder, len(lengths), peer, digest)


async def _done(stream: ByteStream, decoder: wb.AnswerDecoder, count: int, peer: str,
                digest: str | None) -> None:
    got = await _next(stream, decoder, peer)
    if not isinstance(got, wb.Done) or got.chunks != count:
        raise _unexpected(peer, got, f"done ({count} chunks)", digest)


async def _via_side(conn: SideConnection, stream: ByteStream, decoder: wb.AnswerDecoder,
                    lengths: dict[int, int], deliver: Deliver, peer: str,
                    digest: str | None) -> None:
    """Chunks from the side channel; the next one is received while ``deliver`` runs
    (a worker thread reads ahead by up to two chunks)."""
    broke: list[PeerError] = []
    failed: list[Exception] = []
    send, receive = trio.open_memory_channel[tuple[int, bytes]](1)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_ahead, conn, lengths, send, broke)
            async with receive:
                try:
                    async for index, data in receive:
                        await deliver(index, data)
                except Exception as exc:  # re-raised as it is, not in a group
                    failed.append(exc)
                    nursery.cancel_scope.cancel()
    finally:
        conn.close()
    if failed:
        raise failed[0]
    if broke:
        # The server stops the side channel when it cannot go on: its reason is on
        # the stream.
        with trio.move_on_after(ERROR_GRACE_S):
            got = await _next(stream, decoder, peer)
            if isinstance(got, wb.Error):
                raise _failed(peer, got, digest) from broke[0]
        raise broke[0]
    await _done(stream, decoder, len(lengths), peer, digest)


async def _read_ahead(conn: SideConnection, lengths: dict[int, int],
                      send: trio.MemorySendChannel[tuple[int, bytes]],
                      broke: list[PeerError]) -> None:
    async with send:
        for index, length in lengths.items():
            try:
                data = await conn.call(functools.partial(_recv, length),
                                       what=f"receive of chunk {index}")
            except PeerError as exc:
                broke.append(exc)
                return
            await send.send((index, data))


def _recv(length: int, sock: ssl.SSLSocket) -> bytes:
    return bytes(recv_exact(sock, length))  # the copy in the thread, off the event loop


class PeerSource:
    """One file at one peer, as a ``transfer.ports.ChunkSource`` (kind "peer").

    After ``manifest()``, gets ask for the digest it named (the file cannot change
    under a model id mid-download) and ``has(i)`` answers from the peer's bitmap.
    """

    def __init__(self, client: BlobClient, peer_id: str, ref: str) -> None:
        self._client = client
        self._peer = peer_id
        self._ref = ref
        self._described: wb.Described | None = None

    @property
    def label(self) -> str:
        return self._peer

    @property
    def kind(self) -> Literal["peer", "http"]:
        return "peer"

    def has(self, index: int) -> bool:
        """Whether the peer said it has chunk ``index`` (True before ``manifest()``)."""
        got = self._described
        return got is None or got.have is None or wb.bitmap_has(got.have, index)

    async def manifest(self) -> wb.Manifest:
        """Asks the peer again each time (a downloading peer's bitmap grows).

        Raises:
            SourceFailed: as BlobClient.describe.
        """
        self._described = await self._client.described(self._peer, self._ref)
        return self._described.manifest

    async def fetch(self, first: int, count: int, *, chunk_bytes: int, size: int,
                    deliver: Deliver) -> None:
        """As ChunkSource.fetch (BlobClient.fetch)."""
        ref = self._ref if self._described is None else self._described.manifest.digest
        await self._client.fetch(self._peer, ref, first, count, chunk_bytes=chunk_bytes,
                                 size=size, deliver=deliver)
