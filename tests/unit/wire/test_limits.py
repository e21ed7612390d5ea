"""One set of request limits: whatever GenerationRequest (or the HTTP API) accepts, the infer
codec can send to any peer — the limits live in wire.limits and are checked once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from peerllm.api import _readers, schemas
from peerllm.api.schemas import ApiError
from peerllm.inference.request import ROLES, ChatMessage, GenerationRequest, SamplingParams
from peerllm.mesh.serving import to_wire_request
from peerllm.wire import infer as wi
from peerllm.wire import limits
from peerllm.wire.framing import unpack_map

# Every code point; and one text in eight gets a lone surrogate (st.text() never makes one).
_chars = st.characters(exclude_categories=())
small_text = st.text(_chars, max_size=12).flatmap(
    lambda s: st.sampled_from([s] * 7 + [s + "\ud800"]))
_blocks = st.sampled_from(["x", "é", "✓", "🦙"])  # 1 to 4 UTF-8 bytes


def near(limit: int) -> st.SearchStrategy[int]:
    return st.integers(max(0, limit - 2), limit + 2)


def repeated(n: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.builds(lambda c, k: c * k, _blocks, n)


@st.composite
def big_text(draw: st.DrawFn, parts: int = 1) -> str:
    """Text whose size straddles the prompt's character or byte limit when ``parts`` of
    it are put together."""
    block = draw(_blocks)
    limit = draw(st.sampled_from([limits.MAX_PROMPT_CHARS,
                                  limits.MAX_PROMPT_BYTES // len(block.encode())]))
    return block * (draw(near(limit)) // parts) + draw(small_text)


def straddle(limit: float) -> st.SearchStrategy[float]:
    return st.sampled_from([0.0, 1.0, limit, limit + 1e-9, limit + 1]) | st.floats(
        min_value=0.0, max_value=limit * 1.1)


def turns(n: int, content: str, role: str = "user") -> tuple[ChatMessage, ...]:
    return (ChatMessage(role=role, content=content),) * n


texts = small_text | big_text()
stop_lists = (st.lists(st.text(_chars, max_size=limits.MAX_STOP_CHARS + 1) | small_text,
                       max_size=limits.MAX_STOP + 1)
              | st.builds(lambda s, n: [s] * n, st.sampled_from(
                  ["s", "🦙" * limits.MAX_STOP_CHARS, "x" * (limits.MAX_STOP_CHARS + 1)]),
                  near(limits.MAX_STOP)))
SAMPLING_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": near(limits.MAX_TOKENS) | st.integers(-1, 64),
    "temperature": straddle(limits.MAX_TEMPERATURE),
    "top_p": st.sampled_from([0.0, 1.0, 1.0 + 1e-9]) | st.floats(0.0, 1.1),
    "top_k": near(limits.MAX_TOP_K) | st.integers(0, 64),
    "repeat_penalty": straddle(limits.MAX_REPEAT_PENALTY),
    "stop": stop_lists.map(tuple),
    "seed": st.none() | near(2**32) | st.integers(0, 2**64),
}
messages = (
    st.lists(st.builds(ChatMessage, role=st.sampled_from(ROLES), content=texts),
             min_size=1, max_size=4)
    | st.builds(turns, near(limits.MAX_MESSAGES), small_text)
    | st.builds(turns, st.just(2), big_text(parts=2), st.sampled_from(ROLES))
).map(tuple)
models = st.text(_chars, min_size=1, max_size=8) | repeated(near(limits.MAX_MODEL_ID_CHARS))
sessions = st.none() | small_text | repeated(near(limits.MAX_SESSION_CHARS))
REQUEST_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "model": models, "messages": messages, "prompt": texts, "resume_text": texts,
}


def assert_sendable(req: GenerationRequest, session: str | None, deadline_s: float) -> None:
    """``req`` encodes as a valid infer frame (no LocalProtocolError) and decodes intact."""
    wire = to_wire_request(req, request_id=1, deadline_s=deadline_s, session=session)
    frame = wi.ClientStream().send(wire)
    assert len(frame) - 4 <= wi.MAX_INFER_FRAME_BYTES
    assert wi.message_from_map(unpack_map(frame[4:])) == wire


def assert_sendable_if_valid(*, params: dict[str, Any] | None = None, session: str | None = None,
                             deadline_s: float = 60.0, **request: Any) -> None:
    """Build the request as the API would; if nothing refuses it, it must be sendable."""
    try:
        req = GenerationRequest(**{"model": "m", "prompt": None if "messages" in request
                                   else "p", **request},
                                params=SamplingParams(**(params or {})))
        session = _readers.session(session, "user")  # the API's check of the routing key
    except (ValueError, TypeError, ApiError):
        event("refused")
        return  # refused before routing: fine, and a 400 at the API
    event("sent")
    assert_sendable(req, session, deadline_s)


@pytest.mark.parametrize("field", sorted(SAMPLING_EDGES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_sampling_at_its_edges_is_refused_or_sendable(field: str, data: st.DataObject) -> None:
    assert_sendable_if_valid(params={field: data.draw(SAMPLING_EDGES[field], label=field)})


@pytest.mark.parametrize("field", [*sorted(REQUEST_EDGES), "session"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_request_text_at_its_edges_is_refused_or_sendable(field: str,
                                                          data: st.DataObject) -> None:
    value = data.draw(sessions if field == "session" else REQUEST_EDGES[field], label=field)
    assert_sendable_if_valid(**{field: value})


@settings(max_examples=200, deadline=None)
@given(request=st.fixed_dictionaries({}, optional=REQUEST_EDGES),
       params=st.fixed_dictionaries({}, optional=SAMPLING_EDGES), session=sessions,
       deadline_s=st.floats(0.0, 1e7))
def test_every_constructible_request_is_sendable(request: dict[str, Any],
                                                 params: dict[str, Any], session: str | None,
                                                 deadline_s: float) -> None:
    assert_sendable_if_valid(params=params, session=session, deadline_s=deadline_s, **request)


def test_the_largest_request_is_sendable() -> None:
    """Every field at its limit in 4-byte characters: the frame still fits 1 MiB."""
    llama = "🦙"
    per_turn, extra = divmod(limits.MAX_PROMPT_BYTES // 4 - 1000, limits.MAX_MESSAGES)
    req = GenerationRequest(
        model=llama * limits.MAX_MODEL_ID_CHARS,
        messages=turns(limits.MAX_MESSAGES, llama * per_turn, "assistant"),
        resume_text=llama * (1000 + extra),
        params=SamplingParams(max_tokens=limits.MAX_TOKENS, temperature=0.123456789,
                              top_k=limits.MAX_TOP_K, repeat_penalty=0.987654321,
                              stop=(llama * limits.MAX_STOP_CHARS,) * limits.MAX_STOP,
                              seed=2**32 - 1))
    assert_sendable(req, llama * limits.MAX_SESSION_CHARS, limits.MAX_DEADLINE_MS / 1000)


# -- the HTTP API: anything it parses can be routed to a remote peer ---------------------

_json_values = (st.none() | st.booleans() | st.integers(-2, 2**33) | st.floats(-1, 12)
                | small_text | st.lists(small_text, max_size=3))
_openai_fields = st.fixed_dictionaries({}, optional={
    "max_tokens": near(limits.MAX_TOKENS), "temperature": straddle(2.0),
    "top_p": st.floats(0.0, 1.1), "top_k": near(limits.MAX_TOP_K),
    "repeat_penalty": straddle(limits.MAX_REPEAT_PENALTY), "stop": stop_lists | small_text,
    "seed": _json_values, "user": sessions,
})
_ollama_options = st.fixed_dictionaries({}, optional={
    "num_predict": near(limits.MAX_TOKENS) | st.integers(-2, 2),
    "temperature": straddle(limits.MAX_TEMPERATURE), "top_p": st.floats(0.0, 1.1),
    "top_k": near(limits.MAX_TOP_K), "repeat_penalty": straddle(limits.MAX_REPEAT_PENALTY),
    "stop": stop_lists, "seed": _json_values,
})
_json_messages = messages.map(lambda ms: [{"role": m.role, "content": m.content} for m in ms])


def assert_parsed_is_sendable(parse: Any, body: dict[str, Any], **kw: Any) -> None:
    """``parse(body)`` gives a sendable request, or a 400 that names the field."""
    refusal: ApiError | None = None
    try:
        gen = parse(body, **kw)
    except ApiError as err:
        refusal = err
    if refusal is not None:
        event("refused")
        assert refusal.status == 400 and refusal.param, refusal.message
    elif gen is not None:
        event("sent")
        assert_sendable(gen.request, gen.session, 60.0)


@settings(max_examples=200, deadline=None)
@given(model=models, messages=_json_messages, fields=_openai_fields, header=sessions)
def test_openai_chat_accepts_only_sendable_requests(
        model: str, messages: list[dict[str, str]], fields: dict[str, Any],
        header: str | None) -> None:
    assert_parsed_is_sendable(schemas.openai_chat, {"model": model, "messages": messages,
                                                    **fields}, session_header=header)


@settings(max_examples=100, deadline=None)
@given(model=models, prompt=texts, fields=_openai_fields)
def test_openai_completion_accepts_only_sendable_requests(
        model: str, prompt: str, fields: dict[str, Any]) -> None:
    assert_parsed_is_sendable(schemas.openai_completion,
                              {"model": model, "prompt": prompt, **fields})


@settings(max_examples=200, deadline=None)
@given(model=models, messages=_json_messages, prompt=texts, system=st.none() | texts,
       raw=st.booleans(), options=_ollama_options)
def test_ollama_accepts_only_sendable_requests(
        model: str, messages: list[dict[str, str]], prompt: str, system: str | None,
        raw: bool, options: dict[str, Any]) -> None:
    assert_parsed_is_sendable(schemas.ollama_chat, {"model": model, "messages": messages,
                                                    "options": options})
    assert_parsed_is_sendable(schemas.ollama_generate, {
        "model": model, "prompt": prompt, "system": system, "raw": raw, "options": options})
