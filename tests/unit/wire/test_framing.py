"""Length-prefixed msgpack framing: round trips, trickled input, limits and hostile bytes."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from peerllm.wire.framing import (
    CLOSED,
    DEFAULT_MAX_FRAME_BYTES,
    NEED_DATA,
    FrameDecoder,
    encode_frame,
    unpack_map,
)

FRAMES: list[dict[str, Any]] = [
    {"t": "info_req", "v": 1, "id": 7},
    {"bin": b"\x00\xff", "nested": {"list": [1, 2.5, None, True, "x"]}, "neg": -3},
    {"": ""},
]


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def drain(dec: FrameDecoder) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        frame = dec.next_frame()
        if frame is NEED_DATA or frame is CLOSED:
            return out
        out.append(frame)


def decode_one(data: bytes) -> dict[str, Any] | type[NEED_DATA] | type[CLOSED]:
    dec = FrameDecoder()
    dec.feed(data)
    return dec.next_frame()


# ---------------------------------------------------------------- encoding


def test_encode_frame_layout() -> None:
    data = encode_frame({"a": 1})
    assert data == b"\x00\x00\x00\x04" + b"\x81\xa1a\x01"


def test_encode_frame_rejects_oversize_body() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame({"blob": b"x" * 100}, max_frame_bytes=50)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_encode_frame_accepts_body_exactly_at_cap() -> None:
    body_len = len(msgpack.packb({"b": b"x" * 40}, use_bin_type=True))
    data = encode_frame({"b": b"x" * 40}, max_frame_bytes=body_len)
    dec = FrameDecoder(max_frame_bytes=body_len)
    dec.feed(data)
    assert dec.next_frame() == {"b": b"x" * 40}


@pytest.mark.parametrize("obj", [{1: "int key"}, {"v": object()}, {"big": 2**64}])
def test_encode_frame_rejects_unencodable(obj: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(obj)
    assert info.value.code is ErrorCode.BAD_FRAME


# ---------------------------------------------------------------- decoding


def test_decoder_byte_at_a_time_several_frames() -> None:
    data = b"".join(encode_frame(f) for f in FRAMES)
    dec = FrameDecoder()
    got: list[dict[str, Any]] = []
    for i in range(len(data)):
        got.extend(drain(dec))
        assert dec.next_frame() is NEED_DATA
        dec.feed(data[i : i + 1])
    got.extend(drain(dec))
    assert got == FRAMES
    dec.feed(b"")
    assert dec.next_frame() is CLOSED
    assert dec.next_frame() is CLOSED


def test_frames_in_one_chunk_come_out_in_order() -> None:
    dec = FrameDecoder()
    dec.feed(b"".join(encode_frame(f) for f in FRAMES))
    assert drain(dec) == FRAMES
    assert dec.next_frame() is NEED_DATA


def test_eof_at_start_is_closed() -> None:
    dec = FrameDecoder()
    dec.feed(b"")
    assert dec.next_frame() is CLOSED


def test_frames_before_eof_are_still_delivered() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(FRAMES[0]) + encode_frame(FRAMES[1]))
    dec.feed(b"")
    assert dec.next_frame() == FRAMES[0]
    assert dec.next_frame() == FRAMES[1]
    assert dec.next_frame() is CLOSED


def test_oversize_length_prefix_rejected_before_body() -> None:
    dec = FrameDecoder(max_frame_bytes=1024)
    dec.feed(struct.pack(">I", 1025))  # header only: no body byte has arrived
    with pytest.raises(RemoteProtocolError) as info:
        dec.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_default_cap_rejects_huge_prefix() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_one(struct.pack(">I", DEFAULT_MAX_FRAME_BYTES + 1))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_zero_length_frame_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_one(b"\x00\x00\x00\x00")
    assert info.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "chunk",
    [b"\x00\x00", encode_frame({"a": 1})[:-1]],
    ids=["inside-header", "inside-body"],
)
def test_eof_mid_frame_is_an_error(chunk: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(chunk)
    assert dec.next_frame() is NEED_DATA
    dec.feed(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        dec.next_frame()


def test_feed_after_eof_is_a_local_error() -> None:
    dec = FrameDecoder()
    dec.feed(b"")
    with pytest.raises(LocalProtocolError):
        dec.feed(b"more")
    with pytest.raises(LocalProtocolError):
        dec.feed(b"")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x81\xa1a", id="truncated-map"),
        pytest.param(b"\x80\x80", id="trailing-bytes"),
        pytest.param(b"\x92\x01\x02", id="array-not-map"),
        pytest.param(b"\x01", id="int-not-map"),
        pytest.param(b"\x81\x01\x01", id="int-key"),
        pytest.param(b"\x81\xc4\x01a\x01", id="bytes-key"),
        pytest.param(b"\x81\xa1a\xd6\xff\x00\x00\x00\x01", id="timestamp-ext"),
        pytest.param(b"\x81\xa1a\xd4\x05\x00", id="ext-type"),
        pytest.param(b"\x81\xa1a\xa2\xff\xfe", id="bad-utf8"),
        pytest.param(b"\x91" * 5000 + b"\x80", id="too-deep"),
    ],
)
def test_bad_bodies_are_bad_frames(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_one(raw_frame(body))
    assert info.value.code is ErrorCode.BAD_FRAME


def test_bad_msgpack_error_is_chained() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_one(raw_frame(b"\x80\x80"))
    assert isinstance(info.value.__cause__, ValueError)


def test_decoder_is_poisoned_after_an_error() -> None:
    dec = FrameDecoder()
    dec.feed(raw_frame(b"\xc1") + encode_frame({"ok": 1}))
    with pytest.raises(RemoteProtocolError):
        dec.next_frame()
    with pytest.raises(RemoteProtocolError) as again:
        dec.next_frame()
    assert again.value.code is ErrorCode.BAD_FRAME
    dec.feed(encode_frame({"ok": 2}))
    with pytest.raises(RemoteProtocolError):
        dec.next_frame()


def test_poisoned_error_keeps_its_code() -> None:
    dec = FrameDecoder(max_frame_bytes=10)
    dec.feed(struct.pack(">I", 11))
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as info:
            dec.next_frame()
        assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_unpack_map_rejects_non_map() -> None:
    with pytest.raises(RemoteProtocolError, match="not a map"):
        unpack_map(msgpack.packb([1, 2]), what="body")


def test_sentinel_reprs() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(CLOSED) == "CLOSED"


# ---------------------------------------------------------------- properties

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_frames = st.dictionaries(st.text(max_size=10), _values, max_size=6)


@settings(deadline=None, max_examples=150)
@given(
    frames=st.lists(_frames, min_size=1, max_size=5),
    cuts=st.lists(st.integers(1, 40), max_size=50),
)
def test_round_trip_in_random_chunks(frames: list[dict[str, Any]], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    got: list[dict[str, Any]] = []
    pos = 0
    for size in [*cuts, len(data)]:
        dec.feed(data[pos : pos + size])
        pos += size
        got.extend(drain(dec))
        if pos >= len(data):
            break
    dec.feed(b"")
    got.extend(drain(dec))
    assert got == frames
    assert dec.next_frame() is CLOSED


def _prefixed(length: int, rest: bytes) -> bytes:
    return struct.pack(">I", length) + rest


@settings(deadline=None, max_examples=300)
@given(
    data=st.binary(max_size=600)
    | st.builds(_prefixed, st.integers(0, 300), st.binary(max_size=300)),
    cuts=st.lists(st.integers(1, 64), max_size=20),
)
def test_hostile_bytes_only_raise_remote_protocol_error(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder(max_frame_bytes=256)
    chunks = []
    pos = 0
    for size in [*cuts, len(data)]:
        if pos >= len(data):
            break
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(b"")  # EOF
    outcome: str | None = None
    error: RemoteProtocolError | None = None
    try:
        for chunk in chunks:
            dec.feed(chunk)
            for _ in range(len(data) + 2):  # each call consumes >= 5 bytes or stops
                frame = dec.next_frame()
                if frame is NEED_DATA:
                    break
                if frame is CLOSED:
                    outcome = "closed"
                    break
                assert isinstance(frame, dict)
                assert all(isinstance(k, str) for k in frame)
            else:
                pytest.fail("decoder kept returning frames without consuming input")
    except RemoteProtocolError as exc:
        error = exc
    # After EOF the decoder must have settled: CLOSED for good, or a sticky error.
    if error is None:
        assert outcome == "closed"
        assert dec.next_frame() is CLOSED
    else:
        assert error.code in {ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE}
        with pytest.raises(RemoteProtocolError):
            dec.next_frame()
