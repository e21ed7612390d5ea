"""revocations protocol messages: round trips, limits, batching, byte-at-a-time decoding."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from peerllm.wire import revocations as wrev
from peerllm.wire.framing import NEED_DATA, FrameDecoder

_jwts = st.text(st.sampled_from("abcXYZ019-_."), min_size=1, max_size=wrev.MAX_RECORD_CHARS)


def decode_frame(data: bytes) -> wrev.Records:
    dec = FrameDecoder(wrev.MAX_REVOCATION_FRAME_BYTES)
    dec.feed(data)
    frame = dec.next_frame()
    assert isinstance(frame, dict)
    assert dec.next_frame() is NEED_DATA
    return wrev.message_from_map(frame)


@settings(deadline=None, max_examples=200)
@given(records=st.lists(_jwts, min_size=1, max_size=wrev.MAX_RECORDS_PER_FRAME).map(tuple))
def test_every_batch_round_trips_through_a_frame(records: tuple[str, ...]) -> None:
    msg = wrev.Records(records=records)
    assert decode_frame(wrev.encode(msg)) == msg


@settings(deadline=None, max_examples=50)
@given(records=st.lists(st.text(min_size=1, max_size=wrev.MAX_RECORD_CHARS), max_size=400))
def test_batches_always_encode_and_keep_every_record_in_order(records: list[str]) -> None:
    # Any text, multi-byte too: batches also respect the frame's byte cap.
    sent = [decode_frame(wrev.encode(b)).records for b in wrev.batches(records)]
    assert [r for batch in sent for r in batch] == records


def test_the_largest_frame_fits_the_cap() -> None:
    # Multi-byte characters: 1024 code points can be 4 KiB of UTF-8; ASCII JWTs are what
    # is sent, and a full frame of the longest ASCII records is far under the cap.
    full = wrev.Records(records=("x" * wrev.MAX_RECORD_CHARS,) * wrev.MAX_RECORDS_PER_FRAME)
    assert len(wrev.encode(full)) < wrev.MAX_REVOCATION_FRAME_BYTES


def test_decoding_a_byte_at_a_time() -> None:
    msg = wrev.Records(records=("a.b.c", "d.e.f"))
    data, dec = wrev.encode(msg), FrameDecoder(wrev.MAX_REVOCATION_FRAME_BYTES)
    for i in range(len(data)):
        assert dec.next_frame() is NEED_DATA
        dec.feed(data[i:i + 1])
    frame = dec.next_frame()
    assert wrev.message_from_map(frame) == msg


@pytest.mark.parametrize(("m", "text", "code"), [
    ({"v": 2, "t": "records", "records": ["a"]}, "version 2", ErrorCode.UNSUPPORTED_VERSION),
    ({"v": 1, "t": "gimme", "records": ["a"]}, "'gimme'", ErrorCode.UNKNOWN_MESSAGE),
    ({"v": 1, "t": "records"}, "records: missing", ErrorCode.BAD_FRAME),
    ({"v": 1, "t": "records", "records": []}, "at least one", ErrorCode.BAD_FRAME),
    ({"v": 1, "t": "records", "records": ["a"] * 129}, "129 items exceeds 128",
     ErrorCode.BAD_FRAME),
    ({"v": 1, "t": "records", "records": ["x" * 1025]}, "records[0]: str length 1025",
     ErrorCode.BAD_FRAME),
    ({"v": 1, "t": "records", "records": [""]}, "records[0]: str length 0", ErrorCode.BAD_FRAME),
    ({"v": 1, "t": "records", "records": [b"a.b.c"]}, "expected str, got bytes",
     ErrorCode.BAD_FRAME),
    ({"v": 1, "t": "records", "records": "a.b.c"}, "expected array", ErrorCode.BAD_FRAME),
    ([1, 2], "expected map", ErrorCode.BAD_FRAME),
])
def test_hostile_maps_are_refused_naming_the_field(m: Any, text: str, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        wrev.message_from_map(m)
    assert err.value.code is code and text in str(err.value)


def test_unknown_keys_are_ignored() -> None:
    assert wrev.message_from_map({"v": 1, "t": "records", "records": ["a"], "later": 1}) \
        == wrev.Records(records=("a",))


def test_we_never_send_what_a_receiver_refuses() -> None:
    with pytest.raises(LocalProtocolError):
        wrev.encode(wrev.Records(records=()))
    with pytest.raises(LocalProtocolError):
        wrev.encode(wrev.Records(records=("a",) * 129))


def test_batches_split_at_the_limit_and_skip_what_cannot_be_sent() -> None:
    records = [f"r{i}" for i in range(300)] + ["x" * 1025, ""]
    got = list(wrev.batches(records))
    assert [len(b.records) for b in got] == [128, 128, 44]
    assert [r for b in got for r in b.records] == records[:300]
    assert list(wrev.batches([])) == []
    wide = ["\U0001f999" * wrev.MAX_RECORD_CHARS] * 100  # 4 KiB of UTF-8 each
    assert [len(b.records) for b in wrev.batches(wide)] == [47, 47, 6]
