"""The /peerllm/node-info/1.0.0 protocol over libp2p: signed answers, reused streams."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream

from ..errors import (
    ErrorCode,
    PeerConnectionLost,
    PeerError,
    PeerTimeout,
    ProtocolError,
    RemoteProtocolError,
)
from ..identity import Identity, peer_id_of, verify
from ..wire.nodeinfo import (
    MAX_INFO_FRAME_BYTES,
    PROTOCOL_ID,
    ErrorResponse,
    InfoRequest,
    InfoResponse,
    NodeInfo,
    make_response,
    message_from_map,
    message_to_map,
    open_response,
)
from .host import P2PHost
from .streams import FramedStream

logger = logging.getLogger(__name__)

IDLE_STREAM_S = 300.0
"""A node-info stream with no request for this long is closed by the server."""


async def serve_node_info(stream: INetStream, *, identity: Identity,
                          current_info: Callable[[], NodeInfo]) -> None:
    """Answer info requests on one stream until the peer closes it.

    A malformed frame raises RemoteProtocolError; the host's safe handler then
    resets the stream. We first tell the peer why, best effort.
    """
    peer = str(stream.muxed_conn.peer_id)
    framed = FramedStream(stream, peer_id=peer, max_frame_bytes=MAX_INFO_FRAME_BYTES)
    while True:
        with trio.move_on_after(IDLE_STREAM_S):
            try:
                frame = await framed.receive()
                if frame is None:
                    break
                msg = message_from_map(frame)
            except RemoteProtocolError as exc:
                with trio.move_on_after(1):
                    await framed.send(message_to_map(
                        ErrorResponse(request_id=0, code=int(exc.code), message=str(exc))))
                raise
            if not isinstance(msg, InfoRequest):
                raise RemoteProtocolError(f"unexpected {type(msg).__name__} from a client",
                                          code=ErrorCode.UNKNOWN_MESSAGE)
            response = make_response(msg.request_id, current_info(),
                                     public_key=identity.public_key, sign=identity.sign)
            await framed.send(message_to_map(response))
            continue
        break  # idle timeout
    await framed.close()


@dataclass
class _Channel:
    framed: FramedStream
    lock: trio.Lock


class NodeInfoClient:
    """Asks peers for their NodeInfo over one reused stream per peer.

    Streams cost ~6 ms to open and ~2–3 ms per request once open, so each peer gets a
    long-lived stream; a failed call drops it and the next call opens a fresh one.
    """

    def __init__(self, host: P2PHost, *, call_timeout_s: float) -> None:
        self._host = host
        self._timeout = call_timeout_s
        self._channels: dict[str, _Channel] = {}
        self._ids = itertools.count(1)

    async def fetch(self, peer_id: str) -> tuple[NodeInfo, float]:
        """Return the peer's verified NodeInfo and the round-trip time in ms.

        Raises:
            PeerTimeout, PeerUnavailable, PeerConnectionLost, NetworkKeyMismatch: the
                peer could not be asked.
            RemoteProtocolError: the peer answered with something invalid or unsigned.
        """
        channel = self._channels.get(peer_id)
        if channel is None:
            raw = await self._host.open_stream(peer_id, PROTOCOL_ID)
            channel = _Channel(FramedStream(raw, peer_id=peer_id,
                                            max_frame_bytes=MAX_INFO_FRAME_BYTES), trio.Lock())
            self._channels[peer_id] = channel
        try:
            async with channel.lock:
                return await self._call(channel.framed, peer_id)
        except (PeerError, ProtocolError):
            await self.drop(peer_id)
            raise

    async def _call(self, framed: FramedStream, peer_id: str) -> tuple[NodeInfo, float]:
        request_id = next(self._ids)
        started = trio.current_time()
        with trio.move_on_after(self._timeout):
            await framed.send(message_to_map(InfoRequest(request_id=request_id)))
            frame = await framed.receive()
            rtt_ms = (trio.current_time() - started) * 1000
            if frame is None:
                raise PeerConnectionLost(peer_id, "node-info stream closed by the peer")
            msg = message_from_map(frame)
            if isinstance(msg, ErrorResponse):
                raise RemoteProtocolError(f"peer refused node-info: {msg.message}",
                                          code=ErrorCode(msg.code) if msg.code in
                                          ErrorCode._value2member_map_ else ErrorCode.INTERNAL)
            if not isinstance(msg, InfoResponse) or msg.request_id != request_id:
                raise RemoteProtocolError("node-info answer does not match the request")
            info = open_response(msg, expected_peer_id=peer_id, peer_id_of=peer_id_of,
                                 verify=verify)
            return info, rtt_ms
        raise PeerTimeout(peer_id, f"no node-info answer within {self._timeout} s", phase="call")

    async def drop(self, peer_id: str) -> None:
        channel = self._channels.pop(peer_id, None)
        if channel is not None:
            await channel.framed.reset()

    async def aclose(self) -> None:
        for peer_id in list(self._channels):
            await self.drop(peer_id)
