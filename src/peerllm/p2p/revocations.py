"""The /peerllm/revocations/1.0.0 protocol on byte streams: pushing record batches to a
peer, and taking them in under per-peer flood limits.

A push is one stream: the sender writes one or more ``records`` frames and closes; the
receiver hands each frame's records to ``on_records`` (which verifies them) and reads
on until end of stream. Nothing is answered. A peer cannot make us do unbounded work:
records per frame are capped by the codec, frames per second per peer by a token
bucket, concurrent streams per peer by a count; past a limit its stream is reset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from ..errors import PeerTimeout
from ..wire import revocations as wrev
from ..wire.framing import CLOSED, FrameDecoder
from .streams import ByteStream, StreamOpener, receive_event

logger = logging.getLogger(__name__)

OnRecords = Callable[[str, tuple[str, ...]], None]
"""(sending peer, its records) -> None; called in the handler's task, must not block."""

FRAMES_PER_S: Final = 4.0  # sustained, per peer
FRAME_BURST: Final = 100  # a full set of 10 000 records is 79 frames
MAX_STREAMS_PER_PEER: Final = 2
FRAME_IDLE_S: Final = 10.0  # a pushing peer that goes silent this long is dropped
MAX_TRACKED_PEERS: Final = 4096


class FloodLimit:
    """A token bucket of frames per peer (``now`` is trio's clock, passed in)."""

    def __init__(self, *, per_s: float = FRAMES_PER_S, burst: int = FRAME_BURST) -> None:
        self._per_s = per_s
        self._burst = float(burst)
        self._level: dict[str, tuple[float, float]] = {}  # peer -> (frames, at)

    def take(self, peer: str, now: float) -> bool:
        """Spend one frame of ``peer``'s allowance; False if it has none left."""
        frames, at = self._level.pop(peer, (self._burst, now))
        frames = min(self._burst, frames + (now - at) * self._per_s)
        if len(self._level) >= MAX_TRACKED_PEERS:  # forget the least recently seen
            self._level.pop(next(iter(self._level)))
        ok = frames >= 1.0
        self._level[peer] = (frames - 1.0 if ok else frames, now)
        return ok


class RevocationServer:
    """Serves inbound revocation streams; one per node."""

    def __init__(self, on_records: OnRecords, *, limit: FloodLimit | None = None,
                 max_streams_per_peer: int = MAX_STREAMS_PER_PEER) -> None:
        self._on_records = on_records
        self._limit = limit or FloodLimit()
        self._max_streams = max_streams_per_peer
        self._active: dict[str, int] = {}

    async def handle(self, stream: ByteStream) -> None:
        """Read one peer's push to its end.

        Raises:
            RemoteProtocolError: a malformed frame (the host's safe handler resets).
            PeerTimeout: the peer stopped sending mid-push for FRAME_IDLE_S.
            PeerConnectionLost: the stream broke.
        """
        peer = stream.peer_id
        if self._active.get(peer, 0) >= self._max_streams:
            logger.info("revocations: %s already has %d pushes open; resetting another",
                        peer, self._max_streams)
            await stream.reset()
            return
        self._active[peer] = self._active.get(peer, 0) + 1
        try:
            await self._serve(stream, peer)
        finally:
            left = self._active.pop(peer, 1) - 1
            if left > 0:
                self._active[peer] = left

    async def _serve(self, stream: ByteStream, peer: str) -> None:
        decoder = FrameDecoder(wrev.MAX_REVOCATION_FRAME_BYTES)
        while True:
            frame: dict[str, Any] | type[CLOSED] | None = None
            with trio.move_on_after(FRAME_IDLE_S):
                frame = await receive_event(stream, decoder.feed, decoder.next_frame)
            if frame is None:
                raise PeerTimeout(peer, "revocation push went silent", phase="call")
            if frame is CLOSED:
                break
            msg = wrev.message_from_map(frame)
            if not self._limit.take(peer, trio.current_time()):
                # Verifying records costs a signature check each: a flood is cut off.
                logger.warning("revocations: %s is over %g frames/s; resetting its push",
                               peer, FRAMES_PER_S)
                await stream.reset()
                return
            self._on_records(peer, msg.records)
        await stream.aclose()


async def push_records(opener: StreamOpener, peer: str, records: Sequence[str]) -> None:
    """Send ``records`` to ``peer`` on one stream (nothing at all if there are none).

    Raises:
        PeerError subclasses: the stream could not be opened or broke.
    """
    frames = [wrev.encode(batch) for batch in wrev.batches(records)]
    if not frames:
        return
    stream = await opener.open_stream(peer, wrev.PROTOCOL_ID)
    try:
        for frame in frames:
            await stream.send_all(frame)
    except BaseException:
        await stream.reset()
        raise
    await stream.aclose()
