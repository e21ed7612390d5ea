"""The client side of /peerllm/infer/1.0.0: sending a request to a peer, on a stream kept
from an earlier request when the peer agreed to reuse it, and reading the answer back as
``peerllm.events`` (the server side is infer.py, which re-exports these names).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from ..errors import InferenceRejected, PeerConnectionLost, PeerTimeout, RemoteProtocolError
from ..events import Done, FinishReason, TokenChunk
from ..wire import infer as wi
from .streams import ByteStream, StreamOpener, receive_event

logger = logging.getLogger(__name__)

_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop", "length": "length", "cancelled": "cancelled"}


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


@dataclasses.dataclass(frozen=True)
class ClientStreams:
    """Inference streams this node has open to peers: answering now, and kept for reuse."""

    active: int
    idle: int


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
        self._active = 0

    def next_request_id(self) -> int:
        return next(self._ids)

    def idle_streams(self) -> int:
        """Streams kept open for reuse right now (all peers)."""
        return sum(len(v) for v in self._idle.values())

    def statistics(self) -> ClientStreams:
        """Open streams now (the soak benchmark checks none outlives its request)."""
        return ClientStreams(active=self._active, idle=self.idle_streams())

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
        self._active += 1
        try:
            yield RemoteGeneration(stream, proto, reply, model=req.model)
            finished = proto.state is wi.FINISHED
        finally:
            self._active -= 1
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
