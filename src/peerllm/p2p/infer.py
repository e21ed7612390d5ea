"""The /peerllm/infer/1.0.0 protocol on byte streams: serving requests and calling peers.

One request at a time per stream; a stream both ends agreed to reuse (``reuse`` in the
request and in Accepted) carries the next request after Done, so a warm request skips
the stream open and protocol negotiation (~6 ms here; protocols/inference.md). Both
ends speak ``peerllm.events`` (TokenChunk, then Done): the server's generator yields
them and the client's remote stream yields them again, so the wire messages stay inside
this module and ``wire.infer``. The server coalesces the tokens produced while a write
is in flight into one frame (py-libp2p manages ~1,000 small frames/s per connection),
and closing or resetting the stream cancels generation on the server. Everything runs
on ``ByteStream``/``StreamOpener`` (streams.py), so it runs over memory streams in tests.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Protocol

import trio

from ..errors import InferenceRejected, PeerConnectionLost, PeerTimeout, RemoteProtocolError
from ..events import Done, FinishReason, TokenChunk
from ..security_events import PeerLimitHook
from ..wire import infer as wi
from ..wire.framing import CLOSED
from .limits import PeerRate, PeerStreams, StreamStatistics
from .streams import CLOSE_GRACE_S, ByteStream, StreamOpener, receive_event

logger = logging.getLogger(__name__)

REQUEST_READ_TIMEOUT_S: Final = 10.0
"""A client must have sent its whole request this long after opening the stream."""

class TokenSource(Protocol):
    """Where a served answer comes from: chunks, then one Done (a trio
    ``MemoryReceiveChannel`` is one). Read in the server's writing task itself, so a
    source that maps or taps items does it inline, without a task and a channel per
    layer (each was one more pass of the event loop per token)."""

    async def receive(self) -> TokenChunk | Done:
        """The next item; trio.EndOfChannel after the last."""
        ...

    def receive_nowait(self) -> TokenChunk | Done:
        """The next item if one is ready; trio.WouldBlock or trio.EndOfChannel if not."""
        ...


Generator = Callable[[wi.InferRequest, str], AbstractAsyncContextManager[TokenSource]]
"""(request, requesting peer) -> context yielding a source of chunks then one Done.

Raises InferenceRejected to reject (its code/retryable go back in the error frame), on
entry or from the source."""

_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop", "length": "length", "cancelled": "cancelled"}


def _leaves(group: BaseExceptionGroup[InferenceRejected], kind: type[InferenceRejected]
            ) -> list[InferenceRejected]:
    out: list[InferenceRejected] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc, kind))
        elif isinstance(exc, kind):
            out.append(exc)
    return out


async def _send_best_effort(stream: ByteStream, data: bytes) -> None:
    """Send a last word (an error frame) if the peer is still there to read it."""
    with trio.move_on_after(CLOSE_GRACE_S):
        try:
            await stream.send_all(data)
        except PeerConnectionLost:
            logger.debug("could not tell %s why its stream ends", stream.peer_id)


class InferServer:
    """Serves infer streams with ``generate``; one instance per node.

    Per-peer limits, whatever the peer: at most ``max_streams_per_peer`` requests served
    at once (``too_many_streams``) and, with ``stream_rate``, at most that many new
    streams per second (``busy``). Both refusals are retryable error frames with a
    ``retry_after_ms``: the caller's router moves on and counts no failure against us.
    """

    def __init__(self, *, self_peer_id: str, generate: Generator,
                 max_streams_per_peer: int = 8, stream_rate: PeerRate | None = None,
                 load: Callable[[], wi.Load] | None = None,
                 on_limited: PeerLimitHook | None = None) -> None:
        self._self = self_peer_id
        self._generate = generate
        self._load = load
        self._streams = PeerStreams(what="infer", max_per_peer=max_streams_per_peer,
                                    rate=stream_rate, on_limited=on_limited)
        # Reused streams a peer may keep open between requests: as many as it may run.
        self._max_kept = max_streams_per_peer
        self._kept: dict[str, int] = {}

    def statistics(self) -> StreamStatistics:
        return self._streams.statistics()

    async def handle(self, stream: ByteStream) -> None:
        """Serve one stream: read a request, admit it, stream the answer; on a stream both
        ends agreed to reuse, wait for the next request (REUSE_IDLE_S), else close.

        Raises:
            RemoteProtocolError: the client broke the protocol (after we told it why).
            PeerTimeout: no complete request within REQUEST_READ_TIMEOUT_S.
            PeerConnectionLost: the stream broke.
        The host's safe handler resets the stream on any of them.
        """
        peer = stream.peer_id
        proto = wi.ServerStream()
        request = await self._read_request(stream, proto)
        kept = False  # this stream counts against the peer's kept streams
        try:
            while request is not None:
                refusal = self._streams.refusal(peer)
                if refusal is not None:
                    # A busy server, not a broken one: the client may try elsewhere or later.
                    logger.debug("refusing an infer stream from %s: %s", peer,
                                 refusal.message)
                    await stream.send_all(proto.send(wi.Error(
                        request_id=request.request_id, code=refusal.code,
                        message=refusal.message, retryable=True,
                        retry_after_ms=refusal.retry_after_ms)))
                    break
                if request.reuse and not kept and self._kept.get(peer, 0) < self._max_kept:
                    kept = True
                    self._kept[peer] = self._kept.get(peer, 0) + 1
                with self._streams.serving(peer):
                    request = await self._serve(stream, proto, request, reuse=kept)
                if request is None:  # the watcher did not see a next request yet
                    if not proto.reusable:
                        break
                    request = await self._read_request(stream, proto, idle=True)
        finally:
            if kept:
                left = self._kept.get(peer, 1) - 1
                if left <= 0:
                    self._kept.pop(peer, None)
                else:
                    self._kept[peer] = left
        await stream.aclose()

    async def _read_request(self, stream: ByteStream, proto: wi.ServerStream, *,
                            idle: bool = False) -> wi.InferRequest | None:
        """The request, or None if the client closed the stream without sending one (or,
        ``idle``: a reused stream got no next request within REUSE_IDLE_S)."""
        with trio.move_on_after(wi.REUSE_IDLE_S if idle else REQUEST_READ_TIMEOUT_S):
            try:
                event = await receive_event(stream, proto.receive_data, proto.next_event)
            except RemoteProtocolError as exc:
                await _send_best_effort(stream, proto.send(wi.error_for_violation(exc)))
                raise
            # In IDLE (or FINISHED, reusable) the client may send nothing but a request.
            return event if isinstance(event, wi.InferRequest) else None
        if idle:
            return None  # an idle kept stream: closed, nobody is to blame
        raise PeerTimeout(stream.peer_id, "no infer request within the read timeout",
                          phase="call")

    async def _serve(self, stream: ByteStream, proto: wi.ServerStream,
                     req: wi.InferRequest, *, reuse: bool) -> wi.InferRequest | None:
        """Answer ``req``; the client's next request if the watcher already read it."""
        rid = req.request_id
        rejected: list[InferenceRejected] = []
        watcher = _CancelWatcher(stream, proto)
        with trio.move_on_after(req.deadline_ms / 1000) as deadline:
            try:
                async with self._generate(req, stream.peer_id) as items, \
                        trio.open_nursery() as nursery:
                    load = self._load() if self._load is not None else None
                    await stream.send_all(proto.send(wi.Accepted(
                        request_id=rid, served_by=self._self, model=req.model, load=load,
                        reuse=reuse)))
                    nursery.start_soon(watcher.run, nursery.cancel_scope)
                    await _pump(stream, proto, items, rid)
                    nursery.cancel_scope.cancel()
            except* InferenceRejected as group:
                # Raised on entry or by the generator's task; nurseries wrap it in groups.
                rejected.extend(_leaves(group, InferenceRejected))
        if rejected:
            exc = rejected[0]
            await _send_best_effort(stream, proto.send(wi.Error(
                request_id=rid, code=exc.code, message=exc.message, retryable=exc.retryable,
                retry_after_ms=None if exc.retry_after_s is None
                else int(exc.retry_after_s * 1000))))
        if deadline.cancelled_caught:
            await _send_best_effort(stream, proto.send(wi.Error(
                request_id=rid, code="timeout", message="request deadline passed",
                retryable=True)))
        return watcher.next_request


async def _pump(stream: ByteStream, proto: wi.ServerStream, items: TokenSource,
                rid: int) -> None:
    coalescer = wi.TokenCoalescer(rid)
    while True:
        try:
            item = await items.receive()
        except trio.EndOfChannel:
            return
        # Everything that arrived while the last write was in flight goes out now, in
        # as few frames as the limits allow.
        batch = [item]
        while not isinstance(batch[-1], Done):
            try:
                batch.append(items.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        for it in batch:
            if isinstance(it, TokenChunk):
                coalescer.add(it.text, it.n_tokens)
        while (frame := coalescer.take()) is not None:
            await stream.send_all(proto.send(frame))
        last = batch[-1]
        if isinstance(last, Done):
            await stream.send_all(proto.send(wi.Done(
                request_id=rid, finish_reason=last.finish_reason,
                prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                ttft_ms=last.ttft_ms, total_ms=last.total_ms, receipt=last.receipt)))
            return


class _CancelWatcher:
    """Reads the client's side while we answer: a Cancel, a close or a reset cancels the
    generation; on a reused stream the client's next request may arrive right after our
    Done, before we stop reading, and is kept for the serving loop (``next_request``)."""

    def __init__(self, stream: ByteStream, proto: wi.ServerStream) -> None:
        self._stream = stream
        self._proto = proto
        self.next_request: wi.InferRequest | None = None

    async def run(self, scope: trio.CancelScope) -> None:
        stream, proto = self._stream, self._proto
        try:
            while not proto.cancel_requested:
                event = await receive_event(stream, proto.receive_data, proto.next_event)
                if isinstance(event, wi.InferRequest):
                    self.next_request = event  # only legal after our Done (Rule 4)
                    return
                if event is CLOSED or isinstance(event, wi.Cancel):
                    break
        except (PeerConnectionLost, RemoteProtocolError):
            pass  # a broken or misbehaving client no longer wants the answer either
        logger.debug("client %s cancelled request %s", stream.peer_id, proto.request_id)
        scope.cancel()


class RemoteGeneration:
    """One request accepted by a peer: ``events()`` yields its TokenChunks, then Done."""

    def __init__(self, stream: ByteStream, proto: wi.ClientStream, accepted: wi.Accepted,
                 *, model: str) -> None:
        self._stream = stream
        self._proto = proto
        self._model = model
        self.peer = stream.peer_id
        self.accepted = accepted

    @property
    def text_received(self) -> str:
        return self._proto.text_received

    @property
    def tokens_received(self) -> int:
        return self._proto.tokens_received

    async def events(self) -> AsyncGenerator[TokenChunk | Done, None]:
        """The answer as app-level events; ``Done.model`` is the requested model.

        A frame with tokens but no text yet (a character split across tokens) is not an
        event of its own: its tokens are counted in the next chunk.

        Raises:
            InferenceRejected: the peer sent an error frame (code, retryable).
            RemoteProtocolError: the peer broke the protocol.
            PeerConnectionLost: the stream broke or closed before Done.
        """
        pending = 0
        while True:
            event = await receive_event(self._stream, self._proto.receive_data,
                                        self._proto.next_event)
            if isinstance(event, wi.Tokens):
                pending += event.n_tokens
                if event.text:
                    yield TokenChunk(text=event.text, n_tokens=pending)
                    pending = 0
            elif isinstance(event, wi.Done):
                yield Done(finish_reason=_FINISH_REASONS.get(event.finish_reason, "cancelled"),
                           prompt_tokens=event.prompt_tokens,
                           completion_tokens=event.completion_tokens, ttft_ms=event.ttft_ms,
                           total_ms=event.total_ms, model=self._model,
                           receipt=event.receipt)
                return
            elif isinstance(event, wi.Error):
                raise remote_error(event, self.peer)
            else:  # CLOSED after Done: the state machine lets nothing else through
                raise PeerConnectionLost(self.peer, "infer stream closed before done")


def remote_error(err: wi.Error, peer: str) -> InferenceRejected:
    return InferenceRejected(err.code, f"peer {peer}: {err.message}", retryable=err.retryable,
                             retry_after_s=None if err.retry_after_ms is None
                             else err.retry_after_ms / 1000, peer_id=peer)


@dataclasses.dataclass
class _Idle:
    stream: ByteStream
    proto: wi.ClientStream
    since: float  # trio time it became idle


class InferClient:
    """Sends infer requests to peers, on streams it keeps for reuse between requests.

    A stream whose answer ended with Done and whose server agreed to reuse it goes back
    to a small per-peer pool (at most ``max_idle_per_peer``, each for at most
    REUSE_CLIENT_IDLE_S); the next request to that peer takes it and skips the stream
    open. A peer that does not know ``reuse`` (an older node) closes after Done, and
    every request then opens a stream as before.
    """

    def __init__(self, opener: StreamOpener, *, accept_timeout_s: float,
                 max_idle_per_peer: int = 4) -> None:
        self._opener = opener
        self._accept_timeout = accept_timeout_s
        self._ids = itertools.count(1)
        self._max_idle = max_idle_per_peer
        self._idle: dict[str, list[_Idle]] = {}

    def next_request_id(self) -> int:
        return next(self._ids)

    def idle_streams(self) -> int:
        """Streams kept open for reuse right now (all peers)."""
        return sum(len(v) for v in self._idle.values())

    @asynccontextmanager
    async def request(self, peer_id: str, req: wi.InferRequest
                      ) -> AsyncIterator[RemoteGeneration]:
        """Send ``req`` on a kept stream or a new one, and wait for Accepted.

        Leaving the block before the answer is finished resets the stream, which stops
        the generation on the server.

        Raises:
            InferenceRejected: the peer rejected the request (code, retryable).
            PeerError subclasses: the peer could not be reached, broke the stream, or did
                not accept within the accept timeout (PeerTimeout).
            RemoteProtocolError: the peer broke the protocol.
            LocalProtocolError: ``req`` cannot be encoded (our fault, not the peer's).
        """
        req = dataclasses.replace(req, reuse=self._max_idle > 0)
        await self._prune()
        reply: wi.Accepted | None = None
        kept = self._take(peer_id)
        if kept is not None:
            stream, proto = kept
            try:
                reply = await self._ask(stream, proto, req)
            except (PeerConnectionLost, RemoteProtocolError) as exc:
                # The kept stream died while idle (the server or the connection closed
                # it): no generation started on it; ask again on a new stream.
                logger.debug("kept infer stream to %s failed (%s); opening a new one",
                             peer_id, exc)
                await stream.reset()
            except BaseException:
                await stream.reset()
                raise
        if reply is None:
            stream = await self._opener.open_stream(peer_id, wi.PROTOCOL_ID)
            proto = wi.ClientStream()
            try:
                reply = await self._ask(stream, proto, req)
            except BaseException:
                await stream.reset()
                raise
        finished = False
        try:
            yield RemoteGeneration(stream, proto, reply, model=req.model)
            finished = proto.state is wi.FINISHED
        finally:
            idle = self._idle.setdefault(peer_id, [])
            if finished and proto.reusable and len(idle) < self._max_idle:
                idle.append(_Idle(stream, proto, trio.current_time()))
            else:
                if not idle:
                    del self._idle[peer_id]
                if finished:
                    await stream.aclose()
                else:
                    await stream.reset()  # tells the server to stop generating now

    def _take(self, peer_id: str) -> tuple[ByteStream, wi.ClientStream] | None:
        """The most recently used kept stream to ``peer_id`` (pruned just before)."""
        idle = self._idle.get(peer_id)
        if not idle:
            return None
        entry = idle.pop()
        if not idle:
            del self._idle[peer_id]
        return entry.stream, entry.proto

    async def _prune(self) -> None:
        """Close kept streams idle for REUSE_CLIENT_IDLE_S: the server is about to."""
        now = trio.current_time()
        for peer in list(self._idle):
            keep = [e for e in self._idle[peer] if now - e.since < wi.REUSE_CLIENT_IDLE_S]
            old = [e for e in self._idle[peer] if now - e.since >= wi.REUSE_CLIENT_IDLE_S]
            if keep:
                self._idle[peer] = keep
            else:
                del self._idle[peer]
            for entry in old:
                await entry.stream.aclose()

    async def _ask(self, stream: ByteStream, proto: wi.ClientStream, req: wi.InferRequest
                   ) -> wi.Accepted:
        peer_id = stream.peer_id
        await stream.send_all(proto.send(req))
        reply: object = None
        with trio.move_on_after(self._accept_timeout):
            reply = await receive_event(stream, proto.receive_data, proto.next_event)
        if reply is None:
            raise PeerTimeout(peer_id, f"not accepted within {self._accept_timeout} s",
                              phase="call")
        if isinstance(reply, wi.Error):
            raise remote_error(reply, peer_id)
        if not isinstance(reply, wi.Accepted):
            raise RemoteProtocolError(f"expected accepted, got {reply!r}")
        return reply
