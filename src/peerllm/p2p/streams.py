"""Frames over a libp2p stream: the only read loop for PeerLLM's wire protocols."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IOException
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.stream_muxer.exceptions import MuxedStreamError

from ..errors import PeerConnectionLost
from ..wire.framing import CLOSED, DEFAULT_MAX_FRAME_BYTES, NEED_DATA, FrameDecoder, encode_frame

logger = logging.getLogger(__name__)

MAX_READ = 64 * 1024
# Errors a libp2p stream raises when the peer or the connection goes away.
STREAM_ERRORS = (IOException, MuxedStreamError, trio.BrokenResourceError,
                  trio.ClosedResourceError, ConnectionError)


class FramedStream:
    """Length-prefixed msgpack frames on one libp2p stream (see protocols/framing.md).

    ``receive`` returns None on a clean end of stream, raises RemoteProtocolError for
    a bad frame and PeerConnectionLost when the stream or connection breaks.
    """

    def __init__(self, stream: INetStream, *, peer_id: str,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.raw = stream
        self.peer_id = peer_id
        self._max = max_frame_bytes
        self._decoder = FrameDecoder(max_frame_bytes)
        self._send_lock = trio.Lock()

    async def send(self, message: Mapping[str, Any]) -> None:
        data = encode_frame(message, max_frame_bytes=self._max)
        async with self._send_lock:
            try:
                await self.raw.write(data)
            except STREAM_ERRORS as exc:
                raise PeerConnectionLost(self.peer_id, f"write failed: {exc!r}") from exc

    async def receive(self) -> dict[str, Any] | None:
        while True:
            frame = self._decoder.next_frame()
            if frame is CLOSED:
                return None
            if frame is not NEED_DATA:
                return frame
            try:
                data = await self.raw.read(MAX_READ)
            except StreamEOF:
                data = b""
            except STREAM_ERRORS as exc:
                raise PeerConnectionLost(self.peer_id, f"read failed: {exc!r}") from exc
            self._decoder.feed(bytes(data))

    async def close(self) -> None:
        with trio.move_on_after(1, shield=True):
            try:
                await self.raw.close()
            except Exception:  # already reset or gone: closing is best effort
                logger.debug("closing stream to %s raised", self.peer_id, exc_info=True)

    async def reset(self) -> None:
        with trio.move_on_after(1, shield=True):
            try:
                await self.raw.reset()
            except Exception:  # already reset or gone
                logger.debug("resetting stream to %s raised", self.peer_id, exc_info=True)
