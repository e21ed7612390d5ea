"""infer protocol: strict message maps, per-stream state machines, limits and coalescing."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from peerllm.wire import infer as inf
from peerllm.wire.framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame, pack, unpack_map

SAMPLING = inf.Sampling(
    max_tokens=64, temperature=0.7, top_p=0.9, top_k=40, repeat_penalty=1.1, stop=("\n\n",)
)
REQUEST = inf.InferRequest(
    request_id=7,
    model="gemma3-270m-q4_k_m",
    messages=(
        inf.ChatTurn(role="system", content="be brief"),
        inf.ChatTurn(role="user", content="héllo ✓ 🦙"),
    ),
    prompt=None,
    sampling=SAMPLING,
    deadline_ms=30_000,
)
ACCEPTED = inf.Accepted(request_id=7, served_by="12D3KooWpeer", model="gemma3-270m-q4_k_m")
TOKENS = [
    inf.Tokens(request_id=7, text="Hi", n_tokens=1),
    inf.Tokens(request_id=7, text=" there, 🦙", n_tokens=3),
    inf.Tokens(request_id=7, text="", n_tokens=1),
]
DONE = inf.Done(
    request_id=7,
    finish_reason="stop",
    prompt_tokens=12,
    completion_tokens=5,
    ttft_ms=41.5,
    total_ms=180.0,
)


def frame_of(m: dict[str, Any]) -> bytes:
    return encode_frame(m, max_frame_bytes=inf.MAX_INFER_FRAME_BYTES)


def drain(stream: inf.InferStream) -> list[Any]:
    """Every event up to and including NEED_DATA or CLOSED."""
    out: list[Any] = []
    while True:
        event = stream.next_event()
        out.append(event)
        if event is NEED_DATA or event is CLOSED:
            return out


def trickle(stream: inf.InferStream, data: bytes) -> list[Any]:
    """Feed ``data`` one byte at a time; return the messages that came out."""
    got: list[Any] = []
    for i in range(len(data)):
        assert stream.next_event() is NEED_DATA
        stream.receive_data(data[i : i + 1])
        event = stream.next_event()
        while event is not NEED_DATA:
            got.append(event)
            event = stream.next_event()
    return got


def streaming_pair() -> tuple[inf.ClientStream, inf.ServerStream]:
    client, server = inf.ClientStream(), inf.ServerStream()
    server.receive_data(client.send(REQUEST))
    assert server.next_event() == REQUEST
    client.receive_data(server.send(ACCEPTED))
    assert client.next_event() == ACCEPTED
    return client, server


def map_of(msg: inf.Message, **changes: Any) -> dict[str, Any]:
    m = inf.message_to_map(msg)
    m.update(changes)
    return m


def expect_remote(m: Any, text: str, code: ErrorCode = ErrorCode.BAD_FRAME) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        inf.message_from_map(m)
    assert info.value.code is code
    assert text in str(info.value)


# ---------------------------------------------------------------- round trips

_ids = st.integers(min_value=1, max_value=2**63 - 1)
_u = st.integers(min_value=0, max_value=2**63 - 1)
_short = st.text(min_size=1, max_size=30)
_f = st.floats(min_value=0, max_value=1e12, allow_nan=False)
# A JWT's alphabet, up to the cap (the codec does not parse it: auth/ does).
_jwt = st.none() | st.text(st.sampled_from("abcXYZ019-_."), min_size=1, max_size=inf.MAX_AUTH_CHARS)
samplings = st.builds(
    inf.Sampling,
    max_tokens=st.integers(1, inf.MAX_TOKENS_CAP),
    temperature=st.floats(0, inf.MAX_TEMPERATURE),
    top_p=st.floats(0, 1, exclude_min=True),
    top_k=st.integers(0, inf.MAX_TOP_K),
    repeat_penalty=st.floats(0, inf.MAX_REPEAT_PENALTY, exclude_min=True),
    stop=st.lists(st.text(min_size=1, max_size=inf.MAX_STOP_CHARS), max_size=inf.MAX_STOP).map(
        tuple
    ),
    seed=st.none() | _u,
    presence_penalty=st.floats(-inf.MAX_PENALTY, inf.MAX_PENALTY),
    frequency_penalty=st.floats(-inf.MAX_PENALTY, inf.MAX_PENALTY),
    logit_bias=st.dictionaries(
        st.integers(0, inf.MAX_TOKEN_ID),
        st.floats(-inf.MAX_LOGIT_BIAS_VALUE, inf.MAX_LOGIT_BIAS_VALUE),
        max_size=inf.MAX_LOGIT_BIAS,
    ).map(lambda d: tuple(d.items())),
    json_schema=st.none() | st.text(min_size=1, max_size=inf.MAX_JSON_SCHEMA_CHARS),
)
_turns = st.lists(
    st.builds(inf.ChatTurn, role=st.sampled_from(sorted(inf.ROLES)), content=st.text(max_size=50)),
    min_size=1,
    max_size=5,
).map(tuple)
requests = st.one_of(
    st.builds(
        inf.InferRequest,
        request_id=_ids,
        model=_short,
        messages=_turns,
        prompt=st.none(),
        sampling=samplings,
        deadline_ms=st.integers(1, inf.MAX_DEADLINE_MS),
        resume_text=st.text(max_size=40),
        session=st.none() | _short,
        auth=_jwt,
    ),
    st.builds(
        inf.InferRequest,
        request_id=_ids,
        model=_short,
        messages=st.none(),
        prompt=st.text(max_size=80),
        sampling=samplings,
        deadline_ms=st.integers(1, inf.MAX_DEADLINE_MS),
        resume_text=st.text(max_size=40),
        session=st.none() | _short,
        auth=_jwt,
    ),
)
messages = st.one_of(
    requests,
    st.builds(inf.Accepted, request_id=_ids, served_by=_short, model=_short,
              load=st.none() | st.builds(inf.Load, active=st.integers(0, 10**6),
                                         queued=st.integers(0, 10**6),
                                         capacity=st.integers(0, 10**6))),
    st.builds(inf.Tokens, request_id=_ids, text=st.text(max_size=60), n_tokens=st.integers(1, 50)),
    st.builds(
        inf.Done,
        request_id=_ids,
        finish_reason=st.sampled_from(sorted(inf.FINISH_REASONS)),
        prompt_tokens=_u,
        completion_tokens=_u,
        ttft_ms=st.none() | _f,
        total_ms=_f,
        receipt=_jwt,
    ),
    st.builds(
        inf.Error,
        request_id=_u,
        code=st.sampled_from(sorted(inf.ERROR_CODES)),
        message=st.text(max_size=inf.MAX_ERROR_MESSAGE_CHARS),
        retryable=st.booleans(),
        retry_after_ms=st.none() | st.integers(0, inf.MAX_DEADLINE_MS),
    ),
    st.builds(inf.Cancel, request_id=_ids),
)


@settings(deadline=None, max_examples=300)
@given(msg=messages)
def test_every_message_round_trips_through_a_frame(msg: inf.Message) -> None:
    dec = FrameDecoder(inf.MAX_INFER_FRAME_BYTES)
    dec.feed(frame_of(inf.message_to_map(msg)))
    frame = dec.next_frame()
    assert isinstance(frame, dict)
    assert inf.message_from_map(frame) == msg
    assert dec.next_frame() is NEED_DATA


def test_map_layout() -> None:
    assert inf.message_to_map(inf.Cancel(request_id=3)) == {"v": 1, "t": "cancel", "id": 3}
    m = inf.message_to_map(REQUEST)
    assert m["t"] == "req"
    assert m["messages"][1] == {"role": "user", "content": "héllo ✓ 🦙"}
    assert m["prompt"] is None
    assert m["sampling"]["stop"] == ["\n\n"]


def test_the_later_sampling_keys_are_sent_only_when_used() -> None:
    # A request that uses none of them is the exact map older servers know.
    assert set(map_of(REQUEST)["sampling"]) == {"max_tokens", "temperature", "top_p", "top_k",
                                                "repeat_penalty", "stop", "seed"}
    used = dataclasses.replace(SAMPLING, presence_penalty=1, frequency_penalty=-0.5,
                               logit_bias=((5, -100.0),), json_schema='{"type":"object"}')
    sampling = inf.message_to_map(dataclasses.replace(REQUEST, sampling=used))["sampling"]
    assert sampling["presence_penalty"] == 1.0 and type(sampling["presence_penalty"]) is float
    assert sampling["logit_bias"] == [[5, -100.0]]
    assert sampling["json_schema"] == '{"type":"object"}'
    assert inf.message_from_map(map_of(dataclasses.replace(REQUEST, sampling=used))) == \
        dataclasses.replace(REQUEST, sampling=used)


def test_ints_given_for_floats_are_sent_as_floats() -> None:
    req = dataclasses.replace(
        REQUEST, sampling=dataclasses.replace(SAMPLING, temperature=1, repeat_penalty=1)
    )
    sampling = inf.message_to_map(req)["sampling"]
    assert type(sampling["temperature"]) is float
    assert type(sampling["repeat_penalty"]) is float


def test_error_message_is_truncated_on_encode() -> None:
    err = inf.Error(request_id=7, code="internal", message="x" * 5000, retryable=True)
    got = inf.message_from_map(unpack_map(pack(inf.message_to_map(err))))
    assert got == dataclasses.replace(err, message="x" * inf.MAX_ERROR_MESSAGE_CHARS)


def test_unknown_error_code_is_tolerated_on_receive_but_not_sent() -> None:
    err = inf.Error(request_id=7, code="busy", message="", retryable=True, retry_after_ms=500)
    got = inf.message_from_map(map_of(err, code="quota_exceeded"))
    assert isinstance(got, inf.Error)
    assert got.code == "quota_exceeded"
    with pytest.raises(LocalProtocolError):
        inf.message_to_map(dataclasses.replace(err, code="quota_exceeded"))


# ---------------------------------------------------------------- strict decoding


def test_version_is_checked_before_type() -> None:
    expect_remote({"v": 2, "t": "nonsense"}, "version 2", ErrorCode.UNSUPPORTED_VERSION)
    expect_remote({"t": "req"}, "v: missing")
    expect_remote({"v": True, "t": "req"}, "v: expected int, got bool")


def test_unknown_type() -> None:
    expect_remote({"v": 1, "t": "ping", "id": 1}, "'ping'", ErrorCode.UNKNOWN_MESSAGE)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"max_tokens": inf.MAX_TOKENS_CAP + 1}, "sampling.max_tokens: int 32769 outside 1..32768"),
        ({"max_tokens": 0}, "sampling.max_tokens"),
        ({"max_tokens": True}, "sampling.max_tokens: expected int, got bool"),
        ({"temperature": 5.5}, "sampling.temperature: expected float in [0, 5]"),
        ({"temperature": float("nan")}, "sampling.temperature"),
        ({"top_p": 0.0}, "sampling.top_p: expected float in (0, 1]"),
        ({"top_p": 1.5}, "sampling.top_p: expected float in (0, 1], got 1.5"),
        ({"top_k": 1001}, "sampling.top_k"),
        ({"repeat_penalty": 0}, "sampling.repeat_penalty"),
        ({"stop": ["a"] * (inf.MAX_STOP + 1)}, "sampling.stop: 9 items exceeds 8"),
        ({"stop": ["x" * 65]}, "sampling.stop[0]: str length 65"),
        ({"stop": [""]}, "sampling.stop[0]"),
        ({"seed": -1}, "sampling.seed"),
        ({"seed": "1"}, "sampling.seed: expected int, got str"),
        ({"presence_penalty": 2.5}, "sampling.presence_penalty: expected float in [-2, 2]"),
        ({"frequency_penalty": -2.5}, "sampling.frequency_penalty"),
        ({"frequency_penalty": "1"}, "sampling.frequency_penalty: expected float, got str"),
        ({"logit_bias": {"1": 2.0}}, "sampling.logit_bias: expected array"),
        ({"logit_bias": [[1, 2.0, 3]]}, "sampling.logit_bias[0]: expected a [token, bias] pair"),
        ({"logit_bias": [[-1, 2.0]]}, "sampling.logit_bias[0][0]"),
        ({"logit_bias": [[2**31, 2.0]]}, "sampling.logit_bias[0][0]"),
        ({"logit_bias": [[1, 100.5]]}, "sampling.logit_bias[0][1]: expected float in [-100, 100]"),
        ({"logit_bias": [[1, 1.0], [1, 2.0]]}, "sampling.logit_bias[1][0]: token 1 appears twice"),
        ({"logit_bias": [[i, 1.0] for i in range(inf.MAX_LOGIT_BIAS + 1)]},
         "sampling.logit_bias: 301 items exceeds 300"),
        ({"json_schema": ""}, "sampling.json_schema: str length 0"),
        ({"json_schema": "x" * (inf.MAX_JSON_SCHEMA_CHARS + 1)}, "sampling.json_schema"),
        ({"json_schema": {"type": "object"}}, "sampling.json_schema: expected str"),
    ],
)
def test_sampling_limits(changes: dict[str, Any], text: str) -> None:
    m = map_of(REQUEST)
    m["sampling"].update(changes)
    expect_remote(m, text)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"id": 0}, "id: int 0 outside 1.."),
        ({"id": True}, "id: expected int, got bool"),
        ({"model": ""}, "model: str length 0"),
        ({"model": "m" * 257}, "model: str length 257"),
        ({"deadline_ms": 0}, "deadline_ms"),
        ({"deadline_ms": inf.MAX_DEADLINE_MS + 1}, "deadline_ms"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role: expected one of"),
        ({"messages": [{"role": "user"}]}, "messages[0].content: missing"),
        ({"messages": ["user: hi"]}, "messages[0]: expected map, got str"),
        ({"messages": []}, "messages: must hold at least one message"),
        ({"prompt": "also"}, "prompt: exactly one of messages and prompt"),
        ({"messages": None}, "prompt: exactly one of messages and prompt"),
        ({"session": ""}, "session"),
        ({"session": "s" * 257}, "session"),
        ({"resume_text": None}, "resume_text: expected str, got nil"),
        ({"sampling": []}, "sampling: expected map, got list"),
    ],
)
def test_request_field_rules(changes: dict[str, Any], text: str) -> None:
    expect_remote(map_of(REQUEST, **changes), text)


def test_missing_key_is_an_error_but_unknown_keys_are_ignored() -> None:
    m = map_of(REQUEST, future_field={"x": 1})
    assert inf.message_from_map(m) == REQUEST
    del m["resume_text"]
    expect_remote(m, "resume_text: missing")


def test_auth_and_receipt_are_optional_keys_sent_only_when_set() -> None:
    # Older peers neither send nor expect them: absent and nil both read as None.
    assert "auth" not in inf.message_to_map(REQUEST)
    assert "receipt" not in inf.message_to_map(DONE)
    signed = dataclasses.replace(REQUEST, auth="h.p.s")
    assert inf.message_to_map(signed)["auth"] == "h.p.s"
    assert inf.message_from_map(map_of(REQUEST, auth=None)) == REQUEST
    assert inf.message_from_map(map_of(DONE, receipt="r.e.c")) == dataclasses.replace(
        DONE, receipt="r.e.c")


@pytest.mark.parametrize(("msg", "key"), [(REQUEST, "auth"), (DONE, "receipt")])
def test_auth_and_receipt_limits(msg: inf.Message, key: str) -> None:
    expect_remote(map_of(msg, **{key: "x" * (inf.MAX_AUTH_CHARS + 1)}),
                  f"{key}: str length 8193 outside 1..8192")
    expect_remote(map_of(msg, **{key: ""}), f"{key}: str length 0")
    expect_remote(map_of(msg, **{key: b"h.p.s"}), f"{key}: expected str, got bytes")
    with pytest.raises(LocalProtocolError):
        inf.message_to_map(dataclasses.replace(msg, **{key: "x" * (inf.MAX_AUTH_CHARS + 1)}))


def test_too_many_messages_is_too_large() -> None:
    turns = [{"role": "user", "content": "x"}] * (inf.MAX_MESSAGES + 1)
    expect_remote(map_of(REQUEST, messages=turns), "257 messages", ErrorCode.FRAME_TOO_LARGE)
    got = inf.message_from_map(map_of(REQUEST, messages=turns[:-1]))
    assert isinstance(got, inf.InferRequest)
    assert got.messages is not None and len(got.messages) == inf.MAX_MESSAGES


def test_prompt_limit_counts_every_message_and_resume_text() -> None:
    half = "x" * (inf.MAX_PROMPT_CHARS // 2)
    turns = [{"role": "user", "content": half}, {"role": "assistant", "content": half}]
    assert isinstance(inf.message_from_map(map_of(REQUEST, messages=turns)), inf.InferRequest)
    over = map_of(REQUEST, messages=turns, resume_text="y")
    expect_remote(over, "prompt:", ErrorCode.FRAME_TOO_LARGE)
    prompt = map_of(REQUEST, messages=None, prompt="p" * (inf.MAX_PROMPT_CHARS + 1))
    expect_remote(prompt, "262145 prompt chars", ErrorCode.FRAME_TOO_LARGE)
    with pytest.raises(LocalProtocolError) as info:
        inf.message_to_map(dataclasses.replace(REQUEST, resume_text=half * 3))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_frame_cap_applies_to_prompts_within_the_char_limit() -> None:
    # 4-byte UTF-8 characters: within the char limit, over the 1 MiB frame cap.
    req = dataclasses.replace(REQUEST, messages=None, prompt="🦙" * inf.MAX_PROMPT_CHARS)
    with pytest.raises(LocalProtocolError) as info:
        inf.ClientStream().send(req)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    ("msg", "changes", "text"),
    [
        (TOKENS[0], {"n_tokens": 0}, "n_tokens"),
        (TOKENS[0], {"n_tokens": True}, "n_tokens: expected int, got bool"),
        (TOKENS[0], {"text": b"Hi"}, "text: expected str, got bytes"),
        (TOKENS[0], {"text": "x" * (inf.MAX_TOKEN_TEXT_CHARS + 1)}, "text: str length"),
        (DONE, {"finish_reason": "eos"}, "finish_reason: expected one of"),
        (DONE, {"ttft_ms": -1.0}, "ttft_ms"),
        (DONE, {"total_ms": None}, "total_ms: expected float, got nil"),
        (ACCEPTED, {"served_by": ""}, "served_by"),
        (ACCEPTED, {"load": [1, 2, 3]}, "load: expected map, got list"),
        (ACCEPTED, {"load": {"active": 1, "queued": 0}}, "load.capacity: missing"),
        (ACCEPTED, {"load": {"active": -1, "queued": 0, "capacity": 1}}, "load.active"),
        (ACCEPTED, {"load": {"active": 10**6 + 1, "queued": 0, "capacity": 1}}, "load.active"),
        (inf.Cancel(request_id=1), {"id": 0}, "id"),
        (
            inf.Error(request_id=1, code="busy", message="", retryable=True),
            {"retryable": 1},
            "retryable: expected bool, got int",
        ),
        (
            inf.Error(request_id=1, code="busy", message="", retryable=True),
            {"retry_after_ms": inf.MAX_DEADLINE_MS + 1},
            "retry_after_ms",
        ),
        (
            inf.Error(request_id=1, code="busy", message="", retryable=True),
            {"message": "m" * 1025},
            "message: str length 1025",
        ),
    ],
)
def test_reply_field_rules(msg: inf.Message, changes: dict[str, Any], text: str) -> None:
    expect_remote(map_of(msg, **changes), text)


@pytest.mark.parametrize(
    "msg",
    [
        dataclasses.replace(REQUEST, messages=(inf.ChatTurn(role="bot", content="x"),)),
        dataclasses.replace(REQUEST, prompt="both"),
        dataclasses.replace(REQUEST, sampling=dataclasses.replace(SAMPLING, max_tokens=10**6)),
        dataclasses.replace(REQUEST, sampling=dataclasses.replace(SAMPLING, max_tokens=True)),
        dataclasses.replace(REQUEST, request_id=0),
        inf.Tokens(request_id=1, text="x", n_tokens=0),
        inf.Done(
            request_id=1,
            finish_reason="eos",
            prompt_tokens=1,
            completion_tokens=1,
            ttft_ms=None,
            total_ms=1.0,
        ),
    ],
)
def test_invalid_messages_are_refused_on_send(msg: inf.Message) -> None:
    with pytest.raises(LocalProtocolError):
        inf.message_to_map(msg)
    stream = inf.ClientStream() if isinstance(msg, inf.InferRequest) else streaming_pair()[1]
    with pytest.raises(LocalProtocolError):
        stream.send(msg)


# ---------------------------------------------------------------- state machines


def test_whole_conversation_byte_at_a_time() -> None:
    client, server = inf.ClientStream(), inf.ServerStream()
    assert client.state is inf.IDLE and server.state is inf.IDLE
    assert trickle(server, client.send(REQUEST)) == [REQUEST]
    assert client.state is inf.AWAIT_ACCEPT and server.state is inf.AWAIT_ACCEPT
    assert server.request == REQUEST and server.request_id == 7

    replies: list[inf.Message] = [ACCEPTED, *TOKENS, DONE]
    wire = b"".join(server.send(msg) for msg in replies)
    assert server.state is inf.FINISHED
    assert server.tokens_sent == 5
    assert trickle(client, wire) == replies
    assert client.state is inf.FINISHED
    assert client.accepted == ACCEPTED and client.outcome == DONE
    assert client.tokens_received == 5
    assert client.text_received == "Hi there, 🦙"

    client.receive_data(b"")
    server.receive_data(b"")
    assert drain(client) == [CLOSED]
    assert drain(client) == [CLOSED]
    assert drain(server) == [CLOSED]
    assert not server.cancel_requested


def test_error_instead_of_accepted() -> None:
    client, server = inf.ClientStream(), inf.ServerStream()
    server.receive_data(client.send(REQUEST))
    drain(server)
    err = inf.Error(request_id=7, code="too_many_streams", message="", retryable=True)
    client.receive_data(server.send(err))
    assert drain(client) == [err, NEED_DATA]
    assert client.state is inf.FINISHED and client.outcome == err


def test_cancel_then_done_cancelled() -> None:
    client, server = streaming_pair()
    client.receive_data(server.send(TOKENS[0]))
    server.receive_data(client.send(inf.Cancel(request_id=7)))
    server.receive_data(client.send(inf.Cancel(request_id=7)))  # idempotent
    assert client.cancel_sent
    assert drain(server) == [inf.Cancel(request_id=7), inf.Cancel(request_id=7), NEED_DATA]
    assert server.cancel_requested
    done = dataclasses.replace(DONE, finish_reason="cancelled", completion_tokens=1)
    client.receive_data(server.send(done))
    assert drain(client) == [TOKENS[0], done, NEED_DATA]


def test_late_cancel_crossing_done_is_ignored_by_the_server() -> None:
    client, server = streaming_pair()
    done_bytes = server.send(DONE)
    server.receive_data(client.send(inf.Cancel(request_id=7)))  # sent before Done arrived
    assert drain(server) == [inf.Cancel(request_id=7), NEED_DATA]
    assert server.state is inf.FINISHED and not server.cancel_requested
    client.receive_data(done_bytes)
    assert drain(client) == [DONE, NEED_DATA]
    with pytest.raises(LocalProtocolError):
        client.send(inf.Cancel(request_id=7))  # the client knows it is finished


def test_server_eof_before_done_means_cancel() -> None:
    _, server = streaming_pair()
    server.receive_data(b"")
    assert drain(server) == [CLOSED]
    assert server.cancel_requested
    server.send(dataclasses.replace(DONE, finish_reason="cancelled"))


def test_server_eof_without_request_is_a_clean_close() -> None:
    server = inf.ServerStream()
    server.receive_data(b"")
    assert drain(server) == [CLOSED]
    assert not server.cancel_requested


@pytest.mark.parametrize("n_frames", [0, 1, 3])
def test_client_eof_mid_stream_reports_progress(n_frames: int) -> None:
    client, server = streaming_pair()
    for tok in TOKENS[:n_frames]:
        client.receive_data(server.send(tok))
    client.receive_data(b"")
    assert [client.next_event() for _ in range(n_frames)] == TOKENS[:n_frames]
    with pytest.raises(RemoteProtocolError, match="stream ended before done"):
        client.next_event()
    assert client.tokens_received == sum(t.n_tokens for t in TOKENS[:n_frames])
    assert client.text_received == "".join(t.text for t in TOKENS[:n_frames])
    assert client.state is inf.ERROR
    with pytest.raises(RemoteProtocolError, match="already failed"):
        client.next_event()


def test_client_eof_before_accepted() -> None:
    client = inf.ClientStream()
    client.send(REQUEST)
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="stream ended before done"):
        client.next_event()
    assert client.tokens_received == 0 and client.text_received == ""


def test_client_rejects_tokens_before_accepted() -> None:
    client = inf.ClientStream()
    client.send(REQUEST)
    client.receive_data(frame_of(inf.message_to_map(TOKENS[0])))
    with pytest.raises(RemoteProtocolError, match="server may not send Tokens in state AWAIT"):
        client.next_event()
    assert client.state is inf.ERROR


def test_server_may_not_send_tokens_before_accepted() -> None:
    server = inf.ServerStream()
    server.receive_data(inf.ClientStream().send(REQUEST))
    drain(server)
    with pytest.raises(LocalProtocolError, match="server may not send Tokens"):
        server.send(TOKENS[0])
    assert server.state is inf.ERROR
    with pytest.raises(LocalProtocolError):
        server.send(ACCEPTED)  # a failed send poisons the stream


def test_two_requests_on_one_stream() -> None:
    client = inf.ClientStream()
    first = client.send(REQUEST)
    with pytest.raises(LocalProtocolError, match="client may not send InferRequest"):
        client.send(dataclasses.replace(REQUEST, request_id=8))
    server = inf.ServerStream()
    server.receive_data(first + first)
    assert server.next_event() == REQUEST
    with pytest.raises(RemoteProtocolError, match="client may not send InferRequest"):
        server.next_event()
    assert server.state is inf.REJECTING


def test_mismatched_request_id_is_rejected_both_ways() -> None:
    client, server = streaming_pair()
    with pytest.raises(LocalProtocolError, match="Tokens for request 8"):
        server.send(dataclasses.replace(TOKENS[0], request_id=8))
    client.receive_data(frame_of(inf.message_to_map(dataclasses.replace(DONE, request_id=8))))
    with pytest.raises(RemoteProtocolError, match="Done for request 8 on the stream of request 7"):
        client.next_event()
    client2, server2 = streaming_pair()
    server2.receive_data(frame_of(inf.message_to_map(inf.Cancel(request_id=9))))
    with pytest.raises(RemoteProtocolError, match="Cancel for request 9"):
        server2.next_event()
    with pytest.raises(LocalProtocolError):
        client2.send(inf.Cancel(request_id=9))


def test_each_side_refuses_the_other_sides_messages() -> None:
    client, server = inf.ClientStream(), inf.ServerStream()
    with pytest.raises(LocalProtocolError, match="client may not send Accepted"):
        client.send(ACCEPTED)
    with pytest.raises(LocalProtocolError, match="server may not send InferRequest"):
        server.send(REQUEST)
    server = inf.ServerStream()
    server.receive_data(frame_of(inf.message_to_map(ACCEPTED)))
    with pytest.raises(RemoteProtocolError, match="client may not send Accepted in state IDLE"):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        inf.ClientStream().send(inf.Cancel(request_id=7))  # nothing to cancel yet


def test_nothing_after_done() -> None:
    client, server = streaming_pair()
    client.receive_data(server.send(DONE))
    with pytest.raises(LocalProtocolError, match="in state FINISHED"):
        server.send(TOKENS[0])
    client.receive_data(frame_of(inf.message_to_map(TOKENS[0])))
    with pytest.raises(RemoteProtocolError, match="server may not send Tokens in state FINISHED"):
        drain(client)


def test_anonymous_error_only_before_accepted() -> None:
    anon = inf.Error(request_id=0, code="bad_request", message="?", retryable=False)
    client = inf.ClientStream()
    client.send(REQUEST)
    client.receive_data(frame_of(inf.message_to_map(anon)))
    assert client.next_event() == anon
    client, server = streaming_pair()
    client.receive_data(frame_of(inf.message_to_map(anon)))
    with pytest.raises(RemoteProtocolError, match="Error for request 0"):
        client.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(anon)  # the server knows the id


def test_server_rejects_an_undecodable_request_then_client_sees_why() -> None:
    client, server = inf.ClientStream(), inf.ServerStream()
    client.send(REQUEST)
    server.receive_data(struct.pack(">I", inf.MAX_INFER_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert server.state is inf.REJECTING and server.request_id is None
    err = inf.error_for_violation(info.value, request_id=server.request_id or 0)
    assert err.code == "too_large" and not err.retryable
    with pytest.raises(LocalProtocolError):
        inf.ServerStream().send(err)  # only after a violation
    client.receive_data(server.send(err))
    assert server.state is inf.FINISHED
    assert drain(client) == [err, NEED_DATA]
    with pytest.raises(RemoteProtocolError, match="already failed"):
        server.next_event()


def test_violation_mid_stream_lets_the_server_answer_with_the_request_id() -> None:
    client, server = streaming_pair()
    server.receive_data(frame_of({"v": 1, "t": "tokens", "id": 7, "text": "", "n_tokens": 1}))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert server.state is inf.REJECTING
    err = inf.error_for_violation(info.value, request_id=server.request_id or 0)
    assert err.code == "bad_request" and err.request_id == 7
    client.receive_data(server.send(err))
    assert drain(client) == [err, NEED_DATA]


def test_transition_table_covers_every_state() -> None:
    for role, table in inf.TRANSITIONS.items():
        assert set(table) >= {inf.IDLE, inf.AWAIT_ACCEPT, inf.STREAMING, inf.FINISHED, inf.ERROR}
        assert table[inf.ERROR] == {}
        for edges in table.values():
            for sender, _ in edges:
                assert isinstance(sender, inf.Role), role
    with pytest.raises(TypeError):
        inf.InferStream()


# ---------------------------------------------------------------- hostile input

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
_keys = st.sampled_from(
    ["v", "t", "id", "text", "n_tokens", "served_by", "model", "code", "message", "retryable"]
)
hostile_maps = st.dictionaries(_keys | st.text(max_size=4), _values, max_size=8).map(
    lambda m: {"v": 1, "t": "tokens", "id": 7, **m}
)


def feed_hostile(stream: inf.InferStream, data: bytes) -> None:
    try:
        if data:  # b"" would be EOF
            stream.receive_data(data)
        drain(stream)
        stream.receive_data(b"")
        drain(stream)
    except RemoteProtocolError:
        pass


@settings(deadline=None, max_examples=300)
@given(data=st.binary(max_size=200), server_side=st.booleans())
def test_hostile_bytes_only_raise_remote_protocol_error(data: bytes, server_side: bool) -> None:
    feed_hostile(inf.ServerStream() if server_side else streaming_pair()[0], data)


@settings(deadline=None, max_examples=300)
@given(maps=st.lists(hostile_maps, min_size=1, max_size=3), server_side=st.booleans())
def test_hostile_frames_only_raise_remote_protocol_error(
    maps: list[dict[str, Any]], server_side: bool
) -> None:
    data = b""
    for m in maps:
        body = pack(m)
        data += struct.pack(">I", len(body)) + body
    feed_hostile(streaming_pair()[1] if server_side else streaming_pair()[0], data)


# ---------------------------------------------------------------- coalescing


def test_coalescer_merges_pending_tokens_into_one_frame() -> None:
    co = inf.TokenCoalescer(7)
    assert co.take() is None and co.pending == 0
    for text in ["He", "llo", ",", " 🦙"]:
        co.add(text)
    co.add("", 2)
    assert co.pending == 6 and co.pending_chars == 8
    assert co.take() == inf.Tokens(request_id=7, text="Hello, 🦙", n_tokens=6)
    assert co.take() is None and co.pending == 0 and co.pending_chars == 0
    co.add("x")
    assert co.take() == inf.Tokens(request_id=7, text="x", n_tokens=1)


def test_coalescer_respects_frame_limits() -> None:
    co = inf.TokenCoalescer(3, max_chars=5)
    for text in ["abc", "de", "fgh", "ij"]:
        co.add(text)
    assert co.take() == inf.Tokens(request_id=3, text="abcde", n_tokens=2)
    co.add("k")
    assert co.pending == 3
    assert co.take() == inf.Tokens(request_id=3, text="fghij", n_tokens=2)
    assert co.take() == inf.Tokens(request_id=3, text="k", n_tokens=1)
    big = inf.TokenCoalescer(3)
    big.add("a", inf.MAX_TOKENS_CAP)
    big.add("b")
    assert big.take() == inf.Tokens(request_id=3, text="a", n_tokens=inf.MAX_TOKENS_CAP)
    assert big.take() == inf.Tokens(request_id=3, text="b", n_tokens=1)


@pytest.mark.parametrize(("text", "n"), [("x", 0), ("x", True), ("x" * 6, 1)])
def test_coalescer_refuses_unsendable_tokens(text: str, n: int) -> None:
    with pytest.raises(LocalProtocolError):
        inf.TokenCoalescer(1, max_chars=5).add(text, n)
    with pytest.raises(ValueError, match="max_chars"):
        inf.TokenCoalescer(1, max_chars=0)


@settings(deadline=None, max_examples=100)
@given(
    chunks=st.lists(st.tuples(st.text(max_size=10), st.integers(1, 4)), min_size=1, max_size=40),
    max_chars=st.integers(10, 30),
    takes=st.lists(st.integers(0, 40), max_size=5),
)
def test_coalesced_frames_preserve_text_and_counts(
    chunks: list[tuple[str, int]], max_chars: int, takes: list[int]
) -> None:
    co, out, i = inf.TokenCoalescer(7, max_chars=max_chars), [], 0
    for cut in [*takes, len(chunks)]:  # interleave adds and takes
        for text, n in chunks[i:cut]:
            co.add(text, n)
        i = max(i, min(cut, len(chunks)))
        while (frame := co.take()) is not None:
            out.append(frame)
    assert "".join(f.text for f in out) == "".join(t for t, _ in chunks)
    assert sum(f.n_tokens for f in out) == sum(n for _, n in chunks)
    assert all(len(f.text) <= max_chars and f.request_id == 7 for f in out)
    assert co.pending == 0
    server = streaming_pair()[1]
    for frame in out:
        server.send(frame)  # every coalesced frame is sendable


def test_accepted_load_is_optional_for_older_servers() -> None:
    m = map_of(ACCEPTED)
    assert "load" not in m
    assert inf.message_from_map(m) == ACCEPTED
    hinted = inf.Accepted(request_id=7, served_by="p", model="m",
                          load=inf.Load(active=2, queued=1, capacity=2))
    assert map_of(hinted)["load"] == {"active": 2, "queued": 1, "capacity": 2}
    assert inf.message_from_map(map_of(hinted)) == hinted
