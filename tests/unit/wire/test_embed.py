"""embed protocol: strict message maps, one request and one answer per stream, limits."""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.api import _readers
from peerllm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from peerllm.wire import embed as we
from peerllm.wire import limits
from peerllm.wire.framing import CLOSED, NEED_DATA, encode_frame

REQUEST = we.EmbedRequest(request_id=3, model="m", inputs=("héllo", "🦙"), deadline_ms=5000)
DIMS, VECS = we.pack_vectors([[0.5, -1.0, 2.0], [0.0, 0.25, 1.5]])
ANSWER = we.Embeddings(request_id=3, served_by="12D3KooWpeer", model="m", dims=DIMS,
                       vectors=VECS, prompt_tokens=4, receipt="a.b.c")

_f32 = st.floats(width=32, allow_nan=False)
_text = st.text(max_size=40)


@st.composite
def requests(draw: st.DrawFn) -> we.EmbedRequest:
    return we.EmbedRequest(
        request_id=draw(st.integers(1, 2**63 - 1)),
        model=draw(st.text(min_size=1, max_size=limits.MAX_MODEL_ID_CHARS)),
        inputs=tuple(draw(st.lists(_text, min_size=1, max_size=8))),
        deadline_ms=draw(st.integers(1, we.MAX_DEADLINE_MS)),
        auth=draw(st.none() | st.text(min_size=1, max_size=50)))


@st.composite
def answers(draw: st.DrawFn) -> we.Embeddings:
    dims = draw(st.integers(1, 16))
    rows = draw(st.lists(st.lists(_f32, min_size=dims, max_size=dims), min_size=1,
                         max_size=6))
    d, data = we.pack_vectors(rows)
    return we.Embeddings(request_id=draw(st.integers(1, 2**63 - 1)), served_by="p",
                         model=draw(st.text(min_size=1, max_size=20)), dims=d, vectors=data,
                         prompt_tokens=draw(st.integers(0, 10**6)),
                         receipt=draw(st.none() | st.text(min_size=1, max_size=50)))


@given(st.one_of(requests(), answers()))
@settings(max_examples=200)
def test_every_message_round_trips(msg: we.Message) -> None:
    assert we.message_from_map(we.message_to_map(msg)) == msg


@given(st.lists(st.lists(_f32, min_size=3, max_size=3), min_size=1, max_size=8))
def test_vectors_round_trip_as_float32(rows: list[list[float]]) -> None:
    dims, data = we.pack_vectors(rows)
    assert dims == 3 and len(data) == 12 * len(rows)
    assert we.unpack_vectors(data, dims) == rows


def test_vectors_are_little_endian_float32() -> None:
    assert VECS[:4] == struct.pack("<f", 0.5)
    assert we.unpack_vectors(VECS, DIMS) == [[0.5, -1.0, 2.0], [0.0, 0.25, 1.5]]


@pytest.mark.parametrize("rows", [[], [[]], [[1.0], [1.0, 2.0]]])
def test_vectors_must_be_equally_long_and_non_empty(rows: list[list[float]]) -> None:
    with pytest.raises(ValueError, match="vectors"):
        we.pack_vectors(rows)


def test_the_error_frame_is_the_infer_one() -> None:
    err = we.Error(request_id=3, code="model_not_found", message="no", retryable=False)
    assert we.message_from_map(we.message_to_map(err)) == err


def _map(msg: we.Message, **changes: Any) -> dict[str, Any]:
    return {**we.message_to_map(msg), **changes}


@pytest.mark.parametrize(("changes", "field"), [
    ({"inputs": []}, "inputs"),
    ({"inputs": ["a", 1]}, "inputs[1]"),
    ({"inputs": "a"}, "inputs"),
    ({"model": ""}, "model"),
    ({"id": 0}, "id"),
    ({"deadline_ms": we.MAX_DEADLINE_MS + 1}, "deadline_ms"),
    ({"auth": ""}, "auth"),
])
def test_bad_requests_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RemoteProtocolError, match=re.escape(field)) as info:
        we.message_from_map(_map(REQUEST, **changes))
    assert info.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(("changes", "field"), [
    ({"dims": 0}, "dims"),
    ({"dims": we.MAX_DIMS + 1}, "dims"),
    ({"vectors": b"\0" * 5}, "vectors"),
    ({"vectors": b""}, "vectors"),
    ({"vectors": [1.0]}, "vectors"),
    ({"prompt_tokens": -1}, "prompt_tokens"),
])
def test_bad_answers_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RemoteProtocolError, match=field):
        we.message_from_map(_map(ANSWER, **changes))


def test_requests_over_the_limits_are_too_large() -> None:
    for inputs in (["a"] * (we.MAX_INPUTS + 1), ["x" * (we.MAX_CHARS // 2 + 1)] * 2):
        with pytest.raises(RemoteProtocolError) as info:
            we.message_from_map(_map(REQUEST, inputs=inputs))
        assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_our_own_bad_message_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="inputs"):
        we.message_to_map(we.EmbedRequest(request_id=1, model="m", inputs=(),
                                          deadline_ms=1))


def test_unknown_kinds_and_versions_are_refused() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        we.message_from_map(_map(REQUEST, t="stream"))
    assert info.value.code is ErrorCode.UNKNOWN_MESSAGE
    with pytest.raises(RemoteProtocolError) as info:
        we.message_from_map(_map(REQUEST, v=2))
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_the_largest_request_the_api_accepts_fits_a_frame() -> None:
    """Every request within the API's limits (the same numbers) can be sent to a peer."""
    assert (_readers.MAX_EMBED_INPUTS, _readers.MAX_EMBED_CHARS) == (we.MAX_INPUTS,
                                                                     we.MAX_CHARS)
    per = we.MAX_CHARS // we.MAX_INPUTS
    worst = we.EmbedRequest(request_id=2**63 - 1, model="m" * limits.MAX_MODEL_ID_CHARS,
                            inputs=("🦙" * per,) * we.MAX_INPUTS, deadline_ms=1,
                            auth="j" * 8192)
    client = we.ClientSide()
    data = client.send(worst)
    assert len(data) <= we.MAX_REQUEST_FRAME_BYTES + 4
    server = we.ServerSide()
    server.receive_data(data)
    assert server.next_event() == worst


def test_the_largest_answer_fits_a_frame() -> None:
    dims = 1024
    rows = we.MAX_VALUES // dims
    answer = we.Embeddings(request_id=1, served_by="p" * 256, model="m" * 256, dims=dims,
                           vectors=b"\0" * (4 * dims * rows), prompt_tokens=1,
                           receipt="r" * 8192)
    encode_frame(we.message_to_map(answer), max_frame_bytes=we.MAX_ANSWER_FRAME_BYTES)


def _exchange(answer: we.Embeddings | we.Error) -> Any:
    client, server = we.ClientSide(), we.ServerSide()
    server.receive_data(client.send(REQUEST))
    assert server.next_event() == REQUEST
    assert server.next_event() is NEED_DATA
    client.receive_data(server.send(answer))
    got = client.next_event()
    client.receive_data(b"")
    assert client.next_event() is CLOSED
    return got


def test_one_request_one_answer() -> None:
    assert _exchange(ANSWER) == ANSWER
    err = we.Error(request_id=0, code="bad_request", message="x", retryable=False)
    assert _exchange(err) == err


@pytest.mark.parametrize("answer", [
    we.Embeddings(request_id=4, served_by="p", model="m", dims=DIMS, vectors=VECS,
                  prompt_tokens=1),
    we.Embeddings(request_id=3, served_by="p", model="m", dims=DIMS, vectors=VECS[:12],
                  prompt_tokens=1),
])
def test_the_client_checks_the_answer_against_its_request(answer: we.Embeddings) -> None:
    client, server = we.ClientSide(), we.ServerSide()
    client.send(REQUEST)
    client.receive_data(server.send(answer))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_one_request_per_stream() -> None:
    client, server = we.ClientSide(), we.ServerSide()
    data = client.send(REQUEST)
    with pytest.raises(LocalProtocolError):
        client.send(REQUEST)
    server.receive_data(data + data)
    server.next_event()
    with pytest.raises(RemoteProtocolError, match="EmbedRequest"):
        server.next_event()
    server.send(ANSWER)
    with pytest.raises(LocalProtocolError):
        server.send(ANSWER)
