"""The /peerllm/node-info/1.0.0 protocol on byte streams: signed answers, reused streams,
and a per-peer request rate (over it, an ``error`` BUSY answer; the stream stays open)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..audit import NULL_AUDIT, AuditSink
from ..audit import events as audit_events
from ..errors import (
    ErrorCode,
    PeerBusy,
    PeerConnectionLost,
    PeerError,
    PeerTimeout,
    ProtocolError,
    RemoteProtocolError,
)
from ..identity import Identity, peer_id_of, verify
from ..security_events import RecordKind
from ..wire.framing import CLOSED, FrameDecoder, encode_frame
from ..wire.nodeinfo import (
    MAX_INFO_FRAME_BYTES,
    PROTOCOL_ID,
    ErrorResponse,
    InfoRequest,
    InfoResponse,
    Message,
    NodeInfo,
    make_response,
    message_from_map,
    message_to_map,
    open_response,
)
from .limits import PeerRate
from .streams import ByteStream, StreamOpener, receive_event

logger = logging.getLogger(__name__)

IDLE_STREAM_S = 300.0
"""A node-info stream with no request for this long is closed by the server."""


async def _send(stream: ByteStream, msg: Message) -> None:
    await stream.send_all(encode_frame(message_to_map(msg), max_frame_bytes=MAX_INFO_FRAME_BYTES))


async def _receive(stream: ByteStream, decoder: FrameDecoder) -> Message | None:
    """The peer's next message, or None once it closed the stream between messages."""
    frame: dict[str, Any] | type[CLOSED] = await receive_event(stream, decoder.feed,
                                                               decoder.next_frame)
    return None if frame is CLOSED else message_from_map(frame)


async def serve_node_info(stream: ByteStream, *, identity: Identity,
                          current_info: Callable[[], NodeInfo],
                          rate: PeerRate | None = None) -> None:
    """Answer info requests on one stream until the peer closes it (or idles).

    ``rate`` (shared by all of a node's node-info streams) limits the requests each peer
    may make per second, over every stream it opens; one over it is answered with an
    ``error`` BUSY for its id, and the stream goes on.

    Raises:
        RemoteProtocolError: a malformed frame or an unexpected message; we first tell
            the peer why (best effort), and the host's safe handler resets the stream.
        PeerConnectionLost: the stream broke.
    """
    decoder = FrameDecoder(MAX_INFO_FRAME_BYTES)
    while True:
        with trio.move_on_after(IDLE_STREAM_S):
            try:
                msg = await _receive(stream, decoder)
            except RemoteProtocolError as exc:
                with trio.move_on_after(1):
                    await _send(stream, ErrorResponse(request_id=0, code=int(exc.code),
                                                      message=str(exc)))
                raise
            if msg is None:
                break
            if not isinstance(msg, InfoRequest):
                raise RemoteProtocolError(f"unexpected {type(msg).__name__} from a client",
                                          code=ErrorCode.UNKNOWN_MESSAGE)
            wait = None if rate is None else rate.check(stream.peer_id)
            if rate is not None and wait is not None:
                await _send(stream, ErrorResponse(
                    request_id=msg.request_id, code=int(ErrorCode.BUSY),
                    message=f"at most {rate.per_s:g} node-info requests per second per "
                            f"peer; retry in {math.ceil(wait * 1000)} ms"))
                continue
            await _send(stream, make_response(msg.request_id, current_info(),
                                              public_key=identity.public_key,
                                              sign=identity.sign))
            continue
        break  # idle timeout
    await stream.aclose()


@dataclass
class _Channel:
    stream: ByteStream
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(MAX_INFO_FRAME_BYTES))
    lock: trio.Lock = field(default_factory=trio.Lock)


class NodeInfoClient:
    """Asks peers for their NodeInfo over one reused stream per peer.

    Streams cost ~6 ms to open and ~2–3 ms per request once open, so each peer gets a
    long-lived stream; a failed call drops it and the next call opens a fresh one.
    """

    def __init__(self, opener: StreamOpener, *, call_timeout_s: float,
                 audit: AuditSink = NULL_AUDIT) -> None:
        self._opener = opener
        self._audit = audit
        self._timeout = call_timeout_s
        self._channels: dict[str, _Channel] = {}
        self._ids = itertools.count(1)

    async def fetch(self, peer_id: str) -> tuple[NodeInfo, float]:
        """Return the peer's verified NodeInfo and the round-trip time in ms.

        Raises:
            PeerBusy: the peer is over its node-info rate for us; the stream stays open.
            PeerTimeout, PeerUnavailable, PeerConnectionLost, NetworkKeyMismatch: the
                peer could not be asked.
            RemoteProtocolError: the peer answered with something invalid or unsigned.
        """
        channel = self._channels.get(peer_id)
        if channel is None:
            channel = _Channel(await self._opener.open_stream(peer_id, PROTOCOL_ID))
            self._channels[peer_id] = channel
        try:
            async with channel.lock:
                return await self._call(channel, peer_id)
        except PeerBusy:
            raise  # an answer on a healthy stream: keep it
        except (PeerError, ProtocolError):
            await self.drop(peer_id)
            raise

    async def _call(self, channel: _Channel, peer_id: str) -> tuple[NodeInfo, float]:
        request_id = next(self._ids)
        started = trio.current_time()
        with trio.move_on_after(self._timeout):
            await _send(channel.stream, InfoRequest(request_id=request_id))
            msg = await _receive(channel.stream, channel.decoder)
            rtt_ms = (trio.current_time() - started) * 1000
            if msg is None:
                raise PeerConnectionLost(peer_id, "node-info stream closed by the peer")
            if isinstance(msg, ErrorResponse) and msg.code == ErrorCode.BUSY \
                    and msg.request_id == request_id:
                raise PeerBusy(peer_id, f"refused node-info for now: {msg.message}")
            if isinstance(msg, ErrorResponse):
                raise RemoteProtocolError(f"peer refused node-info: {msg.message}",
                                          code=ErrorCode(msg.code) if msg.code in
                                          ErrorCode._value2member_map_ else ErrorCode.INTERNAL)
            if not isinstance(msg, InfoResponse) or msg.request_id != request_id:
                raise RemoteProtocolError("node-info answer does not match the request")
            try:
                info = open_response(msg, expected_peer_id=peer_id, peer_id_of=peer_id_of,
                                     verify=verify)
            except RemoteProtocolError as exc:  # forged, or signed by someone else
                audit_events.invalid_record(self._audit, kind=RecordKind.NODE_INFO,
                                            peer=peer_id, key=None, reason=str(exc))
                raise
            return info, rtt_ms
        raise PeerTimeout(peer_id, f"no node-info answer within {self._timeout} s", phase="call")

    async def drop(self, peer_id: str) -> None:
        channel = self._channels.pop(peer_id, None)
        if channel is not None:
            await channel.stream.reset()

    async def aclose(self) -> None:
        for peer_id in list(self._channels):
            await self.drop(peer_id)
