"""The byte-stream seam: foreign errors become ours at the edge, and the one read loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.stream_muxer.exceptions import MuxedStreamClosed

from peerllm.errors import PeerConnectionLost
from peerllm.p2p.streams import STREAM_ERRORS, Libp2pStream, map_exceptions, receive_event
from peerllm.testing import memory_peer_pair
from peerllm.wire.framing import CLOSED, FrameDecoder, encode_frame


def test_map_exceptions_names_the_peer_and_chains_the_cause() -> None:
    with pytest.raises(PeerConnectionLost) as err, \
            map_exceptions(STREAM_ERRORS, peer_id="p1", what="read"):
        raise StreamReset("boom")
    assert err.value.peer_id == "p1" and "read failed" in str(err.value)
    assert isinstance(err.value.__cause__, StreamReset)


def test_map_exceptions_lets_unlisted_exceptions_through() -> None:
    with pytest.raises(KeyError), map_exceptions(STREAM_ERRORS, peer_id="p1", what="read"):
        raise KeyError("not a stream error")


@dataclass
class _Conn:
    peer_id: str = "12D3KooWpeer"


@dataclass
class FakeNetStream:
    """The INetStream calls Libp2pStream makes, each failing as told."""

    read_error: BaseException | None = None
    write_error: BaseException | None = None
    close_error: BaseException | None = None
    muxed_conn: _Conn = field(default_factory=_Conn)
    written: bytearray = field(default_factory=bytearray)

    async def read(self, n: int | None = None) -> bytes:
        if self.read_error is not None:
            raise self.read_error
        return b"data"

    async def write(self, data: bytes) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.written += data

    async def close(self) -> None:
        if self.close_error is not None:
            raise self.close_error

    async def reset(self) -> None:
        await self.close()


async def test_libp2p_end_of_stream_is_empty_bytes() -> None:
    stream = Libp2pStream(FakeNetStream(read_error=StreamEOF()))  # type: ignore[arg-type]
    assert stream.peer_id == "12D3KooWpeer"
    assert await stream.receive_some() == b""


@pytest.mark.parametrize("error", [StreamReset("reset"), MuxedStreamClosed("closed"),
                                   trio.BrokenResourceError(), ConnectionResetError()])
async def test_libp2p_stream_failures_are_peer_connection_lost(error: Exception) -> None:
    raw = FakeNetStream(read_error=error, write_error=error, close_error=error)
    stream = Libp2pStream(raw, peer_id="p2")  # type: ignore[arg-type]
    with pytest.raises(PeerConnectionLost, match="peer p2: read failed"):
        await stream.receive_some()
    with pytest.raises(PeerConnectionLost, match="peer p2: write failed"):
        await stream.send_all(b"x")
    await stream.aclose()  # best effort: never raises
    await stream.reset()


async def test_receive_event_feeds_a_trickle_until_a_whole_frame() -> None:
    writer, reader = memory_peer_pair()
    data = encode_frame({"t": "x", "n": 1}) + encode_frame({"t": "y"})
    decoder = FrameDecoder()
    async with trio.open_nursery() as nursery:
        async def trickle() -> None:
            for i in range(len(data)):
                await writer.send_all(data[i:i + 1])
            await writer.aclose()

        nursery.start_soon(trickle)
        assert await receive_event(reader, decoder.feed, decoder.next_frame) == {"t": "x", "n": 1}
        assert await receive_event(reader, decoder.feed, decoder.next_frame) == {"t": "y"}
        assert await receive_event(reader, decoder.feed, decoder.next_frame) is CLOSED


async def test_a_reset_memory_stream_fails_both_directions_on_the_other_end() -> None:
    ours, theirs = memory_peer_pair(client="me", server="them")
    assert (ours.peer_id, theirs.peer_id) == ("them", "me")
    await ours.send_all(b"last words")
    await ours.reset()
    assert await theirs.receive_some() == b"last words"  # buffered data first, as in yamux
    with pytest.raises(PeerConnectionLost, match="peer me: read failed"):
        await theirs.receive_some()
    with pytest.raises(PeerConnectionLost, match="peer me: write failed"):
        await theirs.send_all(b"anyone?")


def test_yamux_returns_credit_per_half_window_not_per_read() -> None:
    """py-libp2p's switch still exists, is consulted where window updates are decided,
    and says off once the host applied release_credit_in_halves (0.8.1 internals)."""
    import inspect

    from libp2p.stream_muxer.yamux import yamux

    from peerllm.p2p.streams import release_credit_in_halves

    assert "_yamux_release_on_read()" in inspect.getsource(
        yamux.YamuxStream._auto_tune_and_send_window_update)
    release_credit_in_halves()
    release_credit_in_halves()  # idempotent
    assert yamux._yamux_release_on_read() is False
