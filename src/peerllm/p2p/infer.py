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
The server is here; the client (``InferClient``, ``RemoteGeneration``) is infer_client.py,
re-exported from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

import trio

from ..errors import InferenceRejected, PeerConnectionLost, PeerTimeout, RemoteProtocolError
from ..events import Done, TokenChunk
from ..security_events import PeerLimitHook
from ..wire import infer as wi
from ..wire.framing import CLOSED
from .infer_client import InferClient as InferClient
from .infer_client import RemoteGeneration as RemoteGeneration
from .infer_client import remote_error as remote_error
from .limits import PeerRate, PeerStreams, StreamStatistics
from .streams import CLOSE_GRACE_S, ByteStream, receive_event

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
        proto = wi.ServerStream()
        try:
            async with trio.open_nursery() as nursery:
                # One reader for the stream's life: a read cancelled after the muxer
                # took its bytes loses them (py-libp2p's yamux waits for a lock before
                # returning them), and on a reused stream those can be the next request.
                send, events = trio.open_memory_channel[_Event](1)
                nursery.start_soon(_read_events, stream, proto, send)
                await self._serve_stream(stream, proto, events)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the reader never raises: the body's own
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        await stream.aclose()

    async def _serve_stream(self, stream: ByteStream, proto: wi.ServerStream,
                            events: trio.MemoryReceiveChannel[_Event]) -> None:
        peer = stream.peer_id
        request = await self._read_request(stream, proto, events)
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
                    request = await self._serve(stream, proto, events, request, reuse=kept)
                if request is None:  # the watcher did not take a next request
                    # AWAIT_ACCEPT: the reader already has it (legal only by Rule 4).
                    if not (proto.reusable or proto.state is wi.AWAIT_ACCEPT):
                        break
                    request = await self._read_request(stream, proto, events, idle=True)
        finally:
            if kept:
                left = self._kept.get(peer, 1) - 1
                if left <= 0:
                    self._kept.pop(peer, None)
                else:
                    self._kept[peer] = left

    async def _read_request(self, stream: ByteStream, proto: wi.ServerStream,
                            events: trio.MemoryReceiveChannel[_Event], *,
                            idle: bool = False) -> wi.InferRequest | None:
        """The request, or None if the client closed the stream without sending one (or,
        ``idle``: a reused stream got no next request within REUSE_IDLE_S)."""
        with trio.move_on_after(wi.REUSE_IDLE_S if idle else REQUEST_READ_TIMEOUT_S):
            try:
                event = _raised(await events.receive())
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
                     events: trio.MemoryReceiveChannel[_Event], req: wi.InferRequest, *,
                     reuse: bool) -> wi.InferRequest | None:
        """Answer ``req``; the client's next request if the watcher already read it."""
        rid = req.request_id
        rejected: list[InferenceRejected] = []
        watcher = _CancelWatcher(stream, proto, events)
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


_Event = wi.Message | type[CLOSED] | PeerConnectionLost | RemoteProtocolError
"""What the stream's reader hands on: a message, the end, or why reading stopped."""


async def _read_events(stream: ByteStream, proto: wi.ServerStream,
                       send: trio.MemorySendChannel[_Event]) -> None:
    """Read the client's side for the stream's whole life (never cancelled mid-read
    while someone still wants the bytes); ends after CLOSED or an error, handed on."""
    async with send:
        while True:
            try:
                event: _Event = await receive_event(stream, proto.receive_data,
                                                    proto.next_event)
            except (PeerConnectionLost, RemoteProtocolError) as exc:
                event = exc
            await send.send(event)
            if not isinstance(event, wi.Message):
                return


def _raised(event: _Event) -> wi.Message | type[CLOSED]:
    if isinstance(event, (PeerConnectionLost, RemoteProtocolError)):
        raise event
    return event


class _CancelWatcher:
    """Reads the client's side while we answer: a Cancel, a close or a reset cancels the
    generation; on a reused stream the client's next request may arrive right after our
    Done, before we stop reading, and is kept for the serving loop (``next_request``)."""

    def __init__(self, stream: ByteStream, proto: wi.ServerStream,
                 events: trio.MemoryReceiveChannel[_Event]) -> None:
        self._stream = stream
        self._proto = proto
        self._events = events
        self.next_request: wi.InferRequest | None = None

    async def run(self, scope: trio.CancelScope) -> None:
        stream, proto = self._stream, self._proto
        try:
            while not proto.cancel_requested:
                event = _raised(await self._events.receive())
                if isinstance(event, wi.InferRequest):
                    self.next_request = event  # only legal after our Done (Rule 4)
                    return
                if event is CLOSED or isinstance(event, wi.Cancel):
                    break
        except (PeerConnectionLost, RemoteProtocolError):
            pass  # a broken or misbehaving client no longer wants the answer either
        logger.debug("client %s cancelled request %s", stream.peer_id, proto.request_id)
        scope.cancel()
