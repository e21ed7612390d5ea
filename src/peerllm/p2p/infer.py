"""The /peerllm/infer/1.0.0 protocol over libp2p: serving requests and calling peers.

One request per stream. The server coalesces the tokens produced while a write is in
flight into one frame (py-libp2p manages ~1,000 small frames/s per connection), and
closing or resetting the stream cancels generation on the server.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream

from ..errors import InferenceRejected, PeerConnectionLost, PeerTimeout, RemoteProtocolError
from ..wire.framing import CLOSED, NEED_DATA
from ..wire.infer import (
    FINISHED,
    PROTOCOL_ID,
    Accepted,
    Cancel,
    ClientStream,
    Done,
    Error,
    InferRequest,
    Load,
    ServerStream,
    TokenCoalescer,
    Tokens,
    error_for_violation,
)
from .host import P2PHost
from .streams import MAX_READ, STREAM_ERRORS

logger = logging.getLogger(__name__)

REQUEST_READ_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Piece:
    """Text produced by the engine: ``n_tokens`` tokens rendered as ``text``."""

    text: str
    n_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    total_ms: float


Generator = Callable[[InferRequest, str],
                     AbstractAsyncContextManager[trio.MemoryReceiveChannel[Piece | Finished]]]
"""(request, requesting peer) -> context yielding pieces then one Finished.

Raises InferenceRejected to reject (its code/retryable go back in the error frame)."""


def _leaves(group: BaseExceptionGroup[InferenceRejected], kind: type[InferenceRejected]
            ) -> list[InferenceRejected]:
    out: list[InferenceRejected] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc, kind))
        elif isinstance(exc, kind):
            out.append(exc)
    return out


class _Limits:
    def __init__(self, per_peer: int) -> None:
        self.per_peer = per_peer
        self.active: dict[str, int] = {}


async def _send(stream: INetStream, data: bytes, peer: str) -> None:
    try:
        await stream.write(data)
    except STREAM_ERRORS as exc:
        raise PeerConnectionLost(peer, f"write failed: {exc!r}") from exc


async def _read(stream: INetStream, peer: str) -> bytes:
    try:
        return bytes(await stream.read(MAX_READ))
    except EOFError:
        return b""
    except STREAM_ERRORS as exc:
        raise PeerConnectionLost(peer, f"read failed: {exc!r}") from exc


class InferServer:
    """Serves infer streams with ``generate``; one instance per node."""

    def __init__(self, *, self_peer_id: str, generate: Generator,
                 max_streams_per_peer: int = 8,
                 load: Callable[[], Load] | None = None) -> None:
        self._self = self_peer_id
        self._generate = generate
        self._load = load
        self._limits = _Limits(max_streams_per_peer)

    async def handle(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        proto = ServerStream()
        request: InferRequest | None = None
        with trio.move_on_after(REQUEST_READ_TIMEOUT_S):
            try:
                while request is None:
                    ev = proto.next_event()
                    if ev is NEED_DATA:
                        proto.receive_data(await _read(stream, peer))
                    elif ev is CLOSED:
                        return
                    elif isinstance(ev, InferRequest):
                        request = ev
            except RemoteProtocolError as exc:
                await _send(stream, proto.send(error_for_violation(exc)), peer)
                raise
        if request is None:
            raise PeerTimeout(peer, "no infer request within the read timeout", phase="call")
        active = self._limits.active.get(peer, 0)
        if active >= self._limits.per_peer:
            await _send(stream, proto.send(Error(
                request_id=request.request_id, code="too_many_streams",
                message=f"at most {self._limits.per_peer} concurrent requests per peer",
                retryable=True, retry_after_ms=200)), peer)
            await stream.close()
            return
        self._limits.active[peer] = active + 1
        try:
            await self._serve(stream, proto, request, peer)
        finally:
            left = self._limits.active.get(peer, 1) - 1
            if left <= 0:
                self._limits.active.pop(peer, None)
            else:
                self._limits.active[peer] = left

    async def _serve(self, stream: INetStream, proto: ServerStream, req: InferRequest,
                     peer: str) -> None:
        rid = req.request_id
        rejected: list[InferenceRejected] = []
        with trio.move_on_after(req.deadline_ms / 1000) as deadline:
            try:
                async with self._generate(req, peer) as pieces, trio.open_nursery() as nursery:
                    load = self._load() if self._load is not None else None
                    await _send(stream, proto.send(Accepted(request_id=rid, served_by=self._self,
                                                            model=req.model, load=load)), peer)
                    nursery.start_soon(self._watch_cancel, stream, proto, peer,
                                       nursery.cancel_scope)
                    await self._pump(stream, proto, pieces, rid, peer)
                    nursery.cancel_scope.cancel()
            except* InferenceRejected as group:
                # Raised on entry or by the generator's task; nurseries wrap it in groups.
                rejected.extend(_leaves(group, InferenceRejected))
        if rejected:
            exc = rejected[0]
            with trio.move_on_after(1):
                await _send(stream, proto.send(Error(
                    request_id=rid, code=exc.code, message=exc.message, retryable=exc.retryable,
                    retry_after_ms=None if exc.retry_after_s is None
                    else int(exc.retry_after_s * 1000))), peer)
        if deadline.cancelled_caught:
            with trio.move_on_after(1):
                await _send(stream, proto.send(Error(
                    request_id=rid, code="timeout", message="request deadline passed",
                    retryable=True)), peer)
        with trio.move_on_after(1):
            await stream.close()

    async def _pump(self, stream: INetStream, proto: ServerStream,
                    pieces: trio.MemoryReceiveChannel[Piece | Finished], rid: int,
                    peer: str) -> None:
        coalescer = TokenCoalescer(rid)
        async for item in pieces:
            # Everything that arrived while the last write was in flight goes in one frame.
            batch = [item]
            while not isinstance(batch[-1], Finished):
                try:
                    batch.append(pieces.receive_nowait())
                except trio.WouldBlock:
                    break
            for it in batch:
                if isinstance(it, Piece):
                    coalescer.add(it.text, it.n_tokens)
            frame = coalescer.take()
            if frame is not None:
                await _send(stream, proto.send(frame), peer)
            last = batch[-1]
            if isinstance(last, Finished):
                await _send(stream, proto.send(Done(
                    request_id=rid, finish_reason=last.finish_reason,
                    prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                    ttft_ms=last.ttft_ms, total_ms=last.total_ms)), peer)
                return

    async def _watch_cancel(self, stream: INetStream, proto: ServerStream, peer: str,
                            scope: trio.CancelScope) -> None:
        """Cancel generation when the client sends Cancel, closes or resets the stream."""
        try:
            while True:
                ev = proto.next_event()
                if ev is NEED_DATA:
                    proto.receive_data(await _read(stream, peer))
                    continue
                if ev is CLOSED or isinstance(ev, Cancel) or proto.cancel_requested:
                    break
        except (PeerConnectionLost, RemoteProtocolError):
            pass
        logger.debug("client %s cancelled request %s", peer, proto.request_id)
        scope.cancel()


class RemoteGeneration:
    """Events of one remote request: Tokens frames, then Done (or an InferenceRejected)."""

    def __init__(self, stream: INetStream, proto: ClientStream, peer: str,
                 accepted: Accepted) -> None:
        self._stream = stream
        self._proto = proto
        self.peer = peer
        self.accepted = accepted

    @property
    def text_received(self) -> str:
        return self._proto.text_received

    @property
    def tokens_received(self) -> int:
        return self._proto.tokens_received

    async def events(self) -> AsyncGenerator[Tokens | Done, None]:
        while True:
            ev = await _next(self._stream, self._proto, self.peer)
            if isinstance(ev, Tokens):
                yield ev
            elif isinstance(ev, Done):
                yield ev
                return
            elif isinstance(ev, Error):
                raise _remote_error(ev, self.peer)


async def _next(stream: INetStream, proto: ClientStream, peer: str) -> object:
    while True:
        ev = proto.next_event()
        if ev is NEED_DATA:
            proto.receive_data(await _read(stream, peer))
            continue
        if ev is CLOSED:
            raise PeerConnectionLost(peer, "infer stream closed before done")
        return ev


def _remote_error(err: Error, peer: str) -> InferenceRejected:
    return InferenceRejected(err.code, f"peer {peer}: {err.message}", retryable=err.retryable,
                          retry_after_s=None if err.retry_after_ms is None
                          else err.retry_after_ms / 1000, peer_id=peer)


class InferClient:
    """Sends infer requests to peers (a new stream per request; connections are reused)."""

    def __init__(self, host: P2PHost, *, accept_timeout_s: float) -> None:
        self._host = host
        self._accept_timeout = accept_timeout_s
        self._ids = itertools.count(1)

    def next_request_id(self) -> int:
        return next(self._ids)

    @asynccontextmanager
    async def request(self, peer_id: str, req: InferRequest) -> AsyncIterator[RemoteGeneration]:
        """Open a stream, send ``req`` and wait for Accepted.

        Raises:
            InferenceRejected: the peer rejected the request (code, retryable).
            PeerError subclasses: the peer could not be reached or broke the stream.
            RemoteProtocolError: the peer broke the protocol.
        """
        stream = await self._host.open_stream(peer_id, PROTOCOL_ID)
        proto = ClientStream()
        ok = False
        try:
            await _send(stream, proto.send(req), peer_id)
            accepted: object = None
            with trio.move_on_after(self._accept_timeout):
                accepted = await _next(stream, proto, peer_id)
            if accepted is None:
                raise PeerTimeout(peer_id, f"not accepted within {self._accept_timeout} s",
                                  phase="call")
            if isinstance(accepted, Error):
                raise _remote_error(accepted, peer_id)
            if not isinstance(accepted, Accepted):
                raise RemoteProtocolError(f"expected accepted, got {type(accepted).__name__}")
            gen = RemoteGeneration(stream, proto, peer_id, accepted)
            yield gen
            ok = proto.state is FINISHED
        finally:
            with trio.move_on_after(1, shield=True):
                try:
                    if ok:
                        await stream.close()
                    else:
                        # Resetting tells the server to stop generating now.
                        await stream.reset()
                except Exception:  # already gone
                    logger.debug("closing infer stream to %s raised", peer_id, exc_info=True)
