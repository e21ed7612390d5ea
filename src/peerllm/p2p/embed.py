"""The /peerllm/embed/1.0.0 protocol on byte streams: serving embed requests and asking
peers for embeddings (protocols/embed.md).

One request and one answer per stream; the wire messages stay inside this module and
``wire.embed``. The server applies the same per-peer limits as the infer server (with
its own counters). Everything runs on ``ByteStream``/``StreamOpener``, so it runs over
memory streams in tests.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from ..errors import InferenceRejected, PeerConnectionLost, PeerTimeout, RemoteProtocolError
from ..security_events import PeerLimitHook
from ..wire import embed as we
from ..wire import infer as wi
from .infer import REQUEST_READ_TIMEOUT_S, remote_error
from .limits import PeerRate, PeerStreams, StreamStatistics
from .streams import CLOSE_GRACE_S, ByteStream, StreamOpener, receive_event

logger = logging.getLogger(__name__)

ANSWER_GRACE_S: Final = 5.0
"""How long past the request's deadline a client waits for the answer frame."""


@dataclass(frozen=True, kw_only=True)
class EmbedAnswer:
    """The answer to one embed request, on either side of the stream."""

    vectors: list[list[float]]
    prompt_tokens: int
    receipt: str | None = None


Embedder = Callable[[we.EmbedRequest, str], Awaitable[EmbedAnswer]]
"""(request, requesting peer) -> the answer. Raises InferenceRejected to refuse."""


async def _send_last(stream: ByteStream, data: bytes) -> None:
    """Send the answer or an error frame if the peer is still there to read it."""
    with trio.move_on_after(CLOSE_GRACE_S):
        try:
            await stream.send_all(data)
        except PeerConnectionLost:
            logger.debug("could not answer %s's embed stream", stream.peer_id)


def _error(rid: int, exc: InferenceRejected) -> we.Error:
    return we.Error(request_id=rid, code=exc.code, message=exc.message,
                    retryable=exc.retryable,
                    retry_after_ms=None if exc.retry_after_s is None
                    else min(we.MAX_DEADLINE_MS, int(exc.retry_after_s * 1000)))


class EmbedServer:
    """Serves embed streams with ``embed``; one instance per node.

    Per-peer limits as the InferServer's: at most ``max_streams_per_peer`` requests at
    once (``too_many_streams``) and, with ``stream_rate``, that many new streams per
    second (``busy``), both retryable.
    """

    def __init__(self, *, self_peer_id: str, embed: Embedder, max_streams_per_peer: int = 8,
                 stream_rate: PeerRate | None = None,
                 on_limited: PeerLimitHook | None = None) -> None:
        self._self = self_peer_id
        self._embed = embed
        self._streams = PeerStreams(what="embed", max_per_peer=max_streams_per_peer,
                                    rate=stream_rate, on_limited=on_limited)

    @property
    def active_streams(self) -> int:
        return self._streams.statistics().active_streams

    def statistics(self) -> StreamStatistics:
        """The same figures as the InferServer's, for embed streams."""
        return self._streams.statistics()

    async def handle(self, stream: ByteStream) -> None:
        """Serve one stream: read the request, admit it, answer, close.

        Raises:
            RemoteProtocolError: the client broke the protocol (after we told it why).
            PeerTimeout: no complete request within REQUEST_READ_TIMEOUT_S.
            PeerConnectionLost: the stream broke.
        """
        peer = stream.peer_id
        proto = we.ServerSide()
        req = await self._read_request(stream, proto)
        if req is None:
            return
        refusal = self._streams.refusal(peer)
        if refusal is not None:
            logger.debug("refusing an embed stream from %s: %s", peer, refusal.message)
            await _send_last(stream, proto.send(we.Error(
                request_id=req.request_id, code=refusal.code, message=refusal.message,
                retryable=True, retry_after_ms=refusal.retry_after_ms)))
            await stream.aclose()
            return
        with self._streams.serving(peer):
            answer = await self._answer(req, peer)
        await _send_last(stream, proto.send(answer))
        await stream.aclose()

    async def _read_request(self, stream: ByteStream, proto: we.ServerSide
                            ) -> we.EmbedRequest | None:
        with trio.move_on_after(REQUEST_READ_TIMEOUT_S):
            try:
                event = await receive_event(stream, proto.receive_data, proto.next_event)
            except RemoteProtocolError as exc:
                await _send_last(stream, proto.send(wi.error_for_violation(exc)))
                raise
            return event if isinstance(event, we.EmbedRequest) else None
        raise PeerTimeout(stream.peer_id, "no embed request within the read timeout",
                          phase="call")


    async def _answer(self, req: we.EmbedRequest, peer: str) -> we.Embeddings | we.Error:
        rid = req.request_id
        with trio.move_on_after(req.deadline_ms / 1000):
            try:
                got = await self._embed(req, peer)
            except InferenceRejected as exc:
                return _error(rid, exc)
            return self._frame(req, got)
        return we.Error(request_id=rid, code="timeout", message="request deadline passed",
                        retryable=True)

    def _frame(self, req: we.EmbedRequest, got: EmbedAnswer) -> we.Embeddings | we.Error:
        rid = req.request_id
        if len(got.vectors) != len(req.inputs):
            return we.Error(request_id=rid, code="internal", retryable=True,
                            message=f"the model gave {len(got.vectors)} vectors for "
                                    f"{len(req.inputs)} inputs")
        try:
            dims, data = we.pack_vectors(got.vectors)
        except ValueError as exc:
            return we.Error(request_id=rid, code="internal", message=str(exc), retryable=True)
        if dims > we.MAX_DIMS or dims * len(got.vectors) > we.MAX_VALUES:
            return we.Error(request_id=rid, code="too_large", retryable=False,
                            message=f"{len(got.vectors)} vectors of {dims} values are over "
                                    f"the protocol's {we.MAX_VALUES} values (or {we.MAX_DIMS} "
                                    "dims); send fewer inputs at once")
        return we.Embeddings(request_id=rid, served_by=self._self, model=req.model,
                             dims=dims, vectors=data, prompt_tokens=got.prompt_tokens,
                             receipt=got.receipt)


class EmbedClient:
    """Asks peers for embeddings (a new stream per request; connections are reused)."""

    def __init__(self, opener: StreamOpener) -> None:
        self._opener = opener
        self._ids = itertools.count(1)

    def next_request_id(self) -> int:
        return next(self._ids)

    async def embed(self, peer_id: str, req: we.EmbedRequest) -> EmbedAnswer:
        """Send ``req`` to ``peer_id`` and wait for its answer (the deadline plus a grace).

        Raises:
            InferenceRejected: the peer answered with an error frame (code, retryable).
            PeerError subclasses: the peer could not be reached, broke or closed the
                stream, or did not answer in time (PeerTimeout).
            RemoteProtocolError: the peer broke the protocol.
            LocalProtocolError: ``req`` cannot be encoded (our fault, not the peer's).
        """
        stream = await self._opener.open_stream(peer_id, we.PROTOCOL_ID)
        proto = we.ClientSide()
        finished = False
        try:
            await stream.send_all(proto.send(req))
            reply: object = None
            with trio.move_on_after(req.deadline_ms / 1000 + ANSWER_GRACE_S):
                reply = await receive_event(stream, proto.receive_data, proto.next_event)
            if reply is None:
                raise PeerTimeout(peer_id, "no embeddings within the request's deadline",
                                  phase="call")
            finished = True
            if isinstance(reply, we.Error):
                raise remote_error(reply, peer_id)
            if not isinstance(reply, we.Embeddings):  # CLOSED before the answer
                finished = False
                raise PeerConnectionLost(peer_id, "embed stream closed before the answer")
            return EmbedAnswer(vectors=we.unpack_vectors(reply.vectors, reply.dims),
                               prompt_tokens=reply.prompt_tokens, receipt=reply.receipt)
        finally:
            if finished:
                await stream.aclose()
            else:
                await stream.reset()
