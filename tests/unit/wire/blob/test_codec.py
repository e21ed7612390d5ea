"""The blob codec: every message round-trips, hostile frames fail naming the field, refs
are never paths, and the client's decoder reassembles raw chunks however bytes arrive."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from peerllm.wire import blob as wb
from peerllm.wire.framing import encode_frame, pack

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"

model_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_:+-]{0,40}(/[A-Za-z0-9][A-Za-z0-9_:+-]{0,20})?",
                          fullmatch=True)
refs = st.one_of(model_ids, st.just(DIGEST))


def _manifest(size: int) -> wb.Manifest:
    return wb.manifest_of(bytes(range(256)) * (size // 256) + b"x" * (size % 256),
                          chunk_bytes=wb.MIN_CHUNK_BYTES)


@st.composite
def requests(draw: st.DrawFn) -> wb.Request:
    kind = draw(st.sampled_from(["describe", "get", "fallback"]))
    if kind == "describe":
        return wb.Describe(ref=draw(refs))
    if kind == "fallback":
        return wb.Fallback()
    return wb.Get(ref=draw(refs), first=draw(st.integers(0, wb.MAX_CHUNKS - 1)),
                  count=draw(st.integers(1, wb.MAX_RANGE_CHUNKS)),
                  chunk_bytes=draw(st.integers(1, wb.CHUNK_BYTES_LIMIT)),
                  size=draw(st.integers(0, 2**40)), side_channel=draw(st.booleans()))


@st.composite
def answers(draw: st.DrawFn) -> wb.Answer:
    kind = draw(st.sampled_from(["manifest", "offer", "chunk", "done", "error"]))
    if kind == "manifest":
        m = _manifest(draw(st.integers(0, 5 * wb.MIN_CHUNK_BYTES)))
        have = draw(st.none() | st.just(wb.bitmap_of(m.count, lambda i: i % 2 == 0)))
        meta = draw(st.none() | st.builds(
            wb.ModelMeta, id=model_ids, type=st.sampled_from(["llm", "embedding"]),
            chat_format=st.none() | st.just("chatml"),
            context_size=st.none() | st.integers(1, wb.MAX_CONTEXT_SIZE)))
        return wb.Described(manifest=m, meta=meta, have=have)
    if kind == "offer":
        return wb.Offer(host=draw(st.sampled_from(["", "127.0.0.1", "::1"])),
                        port=draw(st.integers(1, 65535)),
                        cert_sha256=draw(st.binary(min_size=32, max_size=32)),
                        token=draw(st.binary(min_size=32, max_size=32)))
    if kind == "chunk":
        return wb.ChunkHeader(index=draw(st.integers(0, wb.MAX_CHUNKS - 1)),
                              length=draw(st.integers(1, wb.CHUNK_BYTES_LIMIT)))
    if kind == "done":
        return wb.Done(chunks=draw(st.integers(0, wb.MAX_RANGE_CHUNKS)))
    return wb.Error(code=draw(st.sampled_from(sorted(wb.ERROR_CODES))),
                    message=draw(st.text(max_size=50)),
                    retry_after_ms=draw(st.none() | st.integers(0, wb.MAX_RETRY_AFTER_MS)))


@given(requests())
def test_requests_round_trip(msg: wb.Request) -> None:
    assert wb.request_from_map(wb.request_to_map(msg)) == msg
    assert len(wb.encode_request(msg)) <= wb.MAX_REQUEST_FRAME_BYTES


@given(answers())
def test_answers_round_trip(msg: wb.Answer) -> None:
    assert wb.answer_from_map(wb.answer_to_map(msg)) == msg


def test_the_largest_manifest_fits_an_answer_frame() -> None:
    digests = tuple(bytes([i % 256]) * 32 for i in range(wb.MAX_CHUNKS))
    m = wb.Manifest(digest=DIGEST, size=wb.MAX_FILE_BYTES, chunk_bytes=wb.DEFAULT_CHUNK_BYTES,
                    chunks=digests)
    meta = wb.ModelMeta(id="m" * wb.MAX_REF_CHARS, chat_format="c" * wb.MAX_META_CHARS)
    frame = wb.encode_answer(wb.Described(manifest=m, meta=meta,
                                          have=wb.bitmap_of(m.count, lambda i: True)))
    assert len(frame) - 4 <= wb.MAX_ANSWER_FRAME_BYTES


@pytest.mark.parametrize("ref", [
    "../etc/passwd", "/etc/passwd", "a/../../b", "models//x", "a/", ".hidden", "a\\b",
    "a\x00b", "", "x" * 300, "sha256:" + "g" * 64, "sha256:" + "a" * 63, "~/x", "a b",
    "SHA256:" + "a" * 64])
def test_a_ref_that_is_neither_a_digest_nor_a_model_id_is_a_bad_request(ref: str) -> None:
    with pytest.raises(RemoteProtocolError, match="ref") as info:
        wb.request_from_map({"v": 1, "t": "describe", "ref": ref})
    assert info.value.code is ErrorCode.BAD_FRAME
    with pytest.raises(LocalProtocolError, match="ref"):
        wb.request_to_map(wb.Describe(ref=ref))


@pytest.mark.parametrize(("ref", "seen"), [
    (HEX.upper(), DIGEST), (f"sha256-{HEX}", DIGEST), ("qwen2.5-0.5b@0123abcd", None),
    ("org/model:q4", None), ("sha256-0123456789ab", None)])  # a pulled file nobody named
def test_digests_are_normalised_and_model_ids_kept(ref: str, seen: str | None) -> None:
    got = wb.request_from_map({"v": 1, "t": "describe", "ref": ref})
    assert got == wb.Describe(ref=seen or ref)


def _get(**change: Any) -> dict[str, Any]:
    m = {"v": 1, "t": "get", "ref": DIGEST, "first": 0, "count": 1, "chunk_bytes": 65536,
         "size": 1, "side_channel": True}
    m.update(change)
    return m


@pytest.mark.parametrize(("change", "field"), [
    ({"count": wb.MAX_RANGE_CHUNKS + 1}, "count"), ({"count": 0}, "count"),
    ({"count": 2**70}, "count"), ({"first": -1}, "first"), ({"first": "0"}, "first"),
    ({"chunk_bytes": wb.CHUNK_BYTES_LIMIT + 1}, "chunk_bytes"), ({"size": -5}, "size"),
    ({"side_channel": 1}, "side_channel"), ({"ref": 7}, "ref"), ({"ref": None}, "ref")])
def test_hostile_get_frames_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RemoteProtocolError, match=field):
        wb.request_from_map(_get(**change))


@pytest.mark.parametrize(("m", "code"), [
    ({"v": 2, "t": "get"}, ErrorCode.UNSUPPORTED_VERSION),
    ({"v": 1, "t": "manifest"}, ErrorCode.UNKNOWN_MESSAGE),  # an answer sent the wrong way
    ({"v": 1, "t": "nope"}, ErrorCode.UNKNOWN_MESSAGE), ({"t": "get"}, ErrorCode.BAD_FRAME),
    ([1, 2], ErrorCode.BAD_FRAME)])
def test_hostile_envelopes(m: Any, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        wb.request_from_map(m)
    assert info.value.code is code


def _answer(**fields: Any) -> dict[str, Any]:
    return {"v": 1, **fields}


@pytest.mark.parametrize(("m", "field"), [
    (_answer(t="offer", host="h", port=0, cert_sha256=b"x" * 32, token=b"t" * 32), "port"),
    (_answer(t="offer", host="h", port=1, cert_sha256=b"x" * 31, token=b"t" * 32),
     "cert_sha256"),
    (_answer(t="offer", host="h", port=1, cert_sha256=b"x" * 32, token=b""), "token"),
    (_answer(t="offer", host="h" * 100, port=1, cert_sha256=b"x" * 32, token=b"t" * 32), "host"),
    (_answer(t="chunk", index=0, length=wb.CHUNK_BYTES_LIMIT + 1), "length"),
    (_answer(t="chunk", index=0, length=0), "length"),
    (_answer(t="done", chunks=wb.MAX_RANGE_CHUNKS + 1), "chunks"),
    (_answer(t="error", code="teapot", message="", retry_after_ms=None), "code"),
    (_answer(t="error", code="busy", message="", retry_after_ms=2**40), "retry_after_ms"),
    (_answer(t="manifest", manifest={"digest": DIGEST}, have=None, meta=None),
     "manifest.size"),
    (_answer(t="manifest", have=None, meta=None), "manifest"),
])
def test_hostile_answers_name_the_field(m: dict[str, Any], field: str) -> None:
    with pytest.raises(RemoteProtocolError, match=field):
        wb.answer_from_map(m)


def test_a_bitmap_of_the_wrong_size_or_with_bits_past_the_end_is_refused() -> None:
    m = _manifest(3 * wb.MIN_CHUNK_BYTES)  # 3 chunks: one bitmap byte, bits 0..2
    base = wb.answer_to_map(wb.Described(manifest=m, have=b"\x07"))
    for have, problem in ((b"\x07\x00", "have"), (b"\x0f", "past chunk 2")):
        with pytest.raises(RemoteProtocolError, match=problem):
            wb.answer_from_map({**base, "have": have})


def test_the_offer_token_never_shows_in_its_repr() -> None:
    offer = wb.Offer(host="", port=1, cert_sha256=b"c" * 32,
                     token=b"secret-token-bytes-0123456789ab")
    assert "secret" not in repr(offer) and "token" not in repr(offer)


def _chunk_stream(chunks: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for index, data in chunks:
        out += wb.encode_answer(wb.ChunkHeader(index=index, length=len(data))) + data
    return out + wb.encode_answer(wb.Done(chunks=len(chunks)))


@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=4),
       st.integers(1, 5000))
def test_the_decoder_reassembles_chunks_whatever_the_read_sizes(
        datas: list[bytes], step: int) -> None:
    wire = _chunk_stream(list(enumerate(datas)))
    decoder = wb.AnswerDecoder()
    events: list[object] = []
    for at in range(0, len(wire), step):
        decoder.feed(wire[at:at + step])
        while (event := decoder.next_event()) is not wb.NEED_DATA:
            events.append(event)
    decoder.feed(b"")
    assert decoder.next_event() is wb.CLOSED
    assert events == [wb.Chunk(i, d) for i, d in enumerate(datas)] + [wb.Done(chunks=len(datas))]


def test_a_stream_that_ends_inside_a_chunk_is_a_remote_error() -> None:
    decoder = wb.AnswerDecoder()
    decoder.feed(wb.encode_answer(wb.ChunkHeader(index=3, length=10)) + b"12345")
    assert decoder.next_event() is wb.NEED_DATA
    decoder.feed(b"")
    with pytest.raises(RemoteProtocolError, match="chunk 3"):
        decoder.next_event()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        decoder.next_event()


def test_a_chunk_longer_than_asked_is_refused_from_its_header() -> None:
    decoder = wb.AnswerDecoder(max_chunk_bytes=1024)
    decoder.feed(wb.encode_answer(wb.ChunkHeader(index=2, length=1025)))
    with pytest.raises(RemoteProtocolError, match=r"chunk\.length: 1025 bytes") as info:
        decoder.next_event()  # before a single byte of the chunk is buffered
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_an_oversized_frame_is_refused_from_its_length_prefix() -> None:
    decoder = wb.AnswerDecoder()
    decoder.feed(struct.pack(">I", wb.MAX_ANSWER_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_the_server_decoder_caps_request_frames() -> None:
    decoder = wb.RequestDecoder()
    decoder.feed(encode_frame({"v": 1, "t": "describe", "ref": "x" * 5000},
                              max_frame_bytes=10**6))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_garbage_bodies_are_bad_frames() -> None:
    decoder = wb.AnswerDecoder()
    body = pack([1, 2, 3])
    decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(RemoteProtocolError, match="not a map"):
        decoder.next_event()


@given(st.integers(0, 200), st.data())
def test_bitmaps_round_trip(count: int, data: st.DataObject) -> None:
    have = data.draw(st.sets(st.integers(0, max(0, count - 1)), max_size=count))
    bitmap = wb.bitmap_of(count, have.__contains__)
    assert len(bitmap) == -(-count // 8)
    assert {i for i in range(count) if wb.bitmap_has(bitmap, i)} == have & set(range(count))
