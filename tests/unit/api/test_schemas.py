"""Request parsing and validation for the OpenAI and Ollama routes (pure; no node)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peerllm.api import schemas
from peerllm.api.schemas import ApiError
from peerllm.inference.engine import ChatMessage, SamplingParams
from peerllm.wire import limits

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def api_error(fn: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value


# -- the body --------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "fragment"), [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"{", "not valid JSON"),
    (b'{"a": NaN}', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got an array"),
    (b'"text"', "must be a JSON object, got a string"),
    (b"null", "must be a JSON object, got null"),
    (b"[" * 100_000, "not valid JSON"),
])
def test_bad_bodies_are_400(body: bytes, fragment: str) -> None:
    err = api_error(schemas.parse_body, body)
    assert err.status == 400 and fragment in err.message


def test_oversized_body_is_413() -> None:
    err = api_error(schemas.parse_body, b" " * (schemas.MAX_BODY_BYTES + 1))
    assert err.status == 413


def test_body_object_parses() -> None:
    assert schemas.parse_body(b'{"model": "m"}') == {"model": "m"}


# -- OpenAI chat -----------------------------------------------------------------------


def test_openai_chat_maps_everything() -> None:
    gen = schemas.openai_chat({
        **CHAT, "messages": [{"role": "developer", "content": "be brief"},
                             {"role": "user", "content": [{"type": "text", "text": "a"},
                                                          {"type": "text", "text": "b"}]},
                             {"role": "assistant", "content": None}],
        "max_completion_tokens": 7, "max_tokens": 99, "temperature": 0, "top_p": 0.5,
        "stop": "END", "seed": 2**40 + 3, "user": "alice", "stream": True,
        "stream_options": {"include_usage": True}, "n": 1, "frequency_penalty": 0.2,
    })
    req = gen.request
    assert req.model == "m" and req.prompt is None
    assert req.messages == (ChatMessage(role="system", content="be brief"),
                            ChatMessage(role="user", content="a\nb"),
                            ChatMessage(role="assistant", content=""))
    assert req.params == SamplingParams(max_tokens=7, temperature=0.0, top_p=0.5,
                                        stop=("END",), seed=3, frequency_penalty=0.2)
    assert gen.stream and gen.include_usage and gen.session == "alice"


def test_openai_chat_defaults() -> None:
    gen = schemas.openai_chat(CHAT)
    assert gen.request.params == SamplingParams()
    assert not gen.stream and not gen.include_usage and gen.session is None


def test_session_header_wins_over_user() -> None:
    gen = schemas.openai_chat({**CHAT, "user": "u"}, session_header="s")
    assert gen.session == "s"


def test_include_usage_needs_stream() -> None:
    gen = schemas.openai_chat({**CHAT, "stream_options": {"include_usage": True}})
    assert not gen.include_usage


def test_integral_float_max_tokens_is_accepted() -> None:
    assert schemas.openai_chat({**CHAT, "max_tokens": 8.0}).request.params.max_tokens == 8


@pytest.mark.parametrize(("patch", "param"), [
    ({"model": None}, "model"),
    ({"model": 3}, "model"),
    ({"model": "  "}, "model"),
    ({"messages": "hi"}, "messages"),
    ({"messages": {"role": "user"}}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
     "messages[0].content[0].text"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": limits.MAX_TOKENS + 1}, "max_tokens"),
    ({"max_tokens": "8"}, "max_tokens"),
    ({"max_completion_tokens": -5}, "max_completion_tokens"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", 1]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["s"] * 17}, "stop"),
    ({"seed": "1"}, "seed"),
    ({"n": 2}, "n"),
    ({"n": "1"}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": []}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"user": 5}, "user"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function"}]}, "tools"),
])
def test_openai_chat_rejects(patch: dict[str, Any], param: str) -> None:
    err = api_error(schemas.openai_chat, {**CHAT, **patch})
    assert err.status == 400
    assert err.param == param, err.message
    assert err.message.startswith(param) or param == "n", err.message


def test_n_must_be_1_message() -> None:
    assert api_error(schemas.openai_chat, {**CHAT, "n": 3}).message == "n must be 1"


def test_oversized_prompt_is_rejected() -> None:
    big = "x" * (limits.MAX_PROMPT_CHARS // 2 + 1)
    body = {**CHAT, "messages": [{"role": "user", "content": big},
                                 {"role": "user", "content": big}]}
    err = api_error(schemas.openai_chat, body)
    assert err.status == 400 and err.param == "messages" and err.code == "prompt_too_large"


def test_prompt_at_the_limit_is_fine() -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * limits.MAX_PROMPT_CHARS}]}
    assert schemas.openai_chat(body).request.messages is not None


# -- OpenAI completions and embeddings -------------------------------------------------


def test_openai_completion() -> None:
    gen = schemas.openai_completion({"model": "m", "prompt": ["Once"], "max_tokens": 4})
    assert gen.request.prompt == "Once" and gen.request.messages is None
    assert gen.request.params.max_tokens == 4


@pytest.mark.parametrize(("patch", "param"), [
    ({"prompt": None}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": "x" * (limits.MAX_PROMPT_CHARS + 1)}, "prompt"),
    ({"echo": True}, "echo"),
    ({"suffix": "tail"}, "suffix"),
    ({"best_of": 2}, "best_of"),
])
def test_openai_completion_rejects(patch: dict[str, Any], param: str) -> None:
    err = api_error(schemas.openai_completion, {"model": "m", "prompt": "p", **patch})
    assert err.status == 400 and err.param == param


def test_openai_embeddings() -> None:
    e = schemas.openai_embeddings({"model": "m", "input": "a"})
    assert e.inputs == ("a",) and not e.base64
    e = schemas.openai_embeddings({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})
    assert e.inputs == ("a", "b") and e.base64


@pytest.mark.parametrize(("patch", "param"), [
    ({"input": None}, "input"),
    ({"input": []}, "input"),
    ({"input": [[1, 2]]}, "input"),
    ({"input": ["x"] * (schemas.MAX_EMBED_INPUTS + 1)}, "input"),
    ({"encoding_format": "int8"}, "encoding_format"),
    ({"dimensions": 8}, "dimensions"),
])
def test_openai_embeddings_rejects(patch: dict[str, Any], param: str) -> None:
    err = api_error(schemas.openai_embeddings, {"model": "m", "input": "a", **patch})
    assert err.status == 400 and err.param == param


# -- Ollama ----------------------------------------------------------------------------


def test_ollama_chat_options() -> None:
    gen = schemas.ollama_chat({
        **CHAT, "tools": [], "keep_alive": "5m",
        "options": {"temperature": 0, "top_p": 0.9, "top_k": 5, "num_predict": 6,
                    "stop": ["x"], "seed": 7, "repeat_penalty": 1.2, "num_ctx": 4096}})
    assert gen.stream  # Ollama streams by default
    assert gen.request.params == SamplingParams(max_tokens=6, temperature=0.0, top_p=0.9,
                                                top_k=5, stop=("x",), seed=7,
                                                repeat_penalty=1.2)


def test_ollama_unlimited_num_predict() -> None:
    gen = schemas.ollama_chat({**CHAT, "options": {"num_predict": -1}, "stream": False})
    assert gen.request.params.max_tokens == limits.MAX_TOKENS and not gen.stream


@pytest.mark.parametrize(("patch", "param"), [
    ({"options": []}, "options"),
    ({"options": {"temperature": "x"}}, "options.temperature"),
    ({"options": {"num_predict": 0}}, "options.num_predict"),
    ({"options": {"top_p": 2}}, "options.top_p"),
    ({"options": {"stop": 3}}, "options.stop"),
    ({"options": {"stop": [""]}}, "options.stop"),
    ({"format": "yaml"}, "format"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "messages[0].images"),
])
def test_ollama_chat_rejects(patch: dict[str, Any], param: str) -> None:
    err = api_error(schemas.ollama_chat, {**CHAT, **patch})
    assert err.status == 400 and err.param == param, err.message


def test_ollama_generate_templated_and_raw() -> None:
    gen = schemas.ollama_generate({"model": "m", "prompt": "hi", "system": "sys"})
    assert gen is not None and gen.request.messages == (
        ChatMessage(role="system", content="sys"), ChatMessage(role="user", content="hi"))
    gen = schemas.ollama_generate({"model": "m", "prompt": "hi", "raw": True, "stream": False})
    assert gen is not None and gen.request.prompt == "hi" and not gen.stream


def test_ollama_generate_empty_prompt_means_load() -> None:
    assert schemas.ollama_generate({"model": "m"}) is None
    assert schemas.ollama_generate({"model": "m", "prompt": ""}) is None


@pytest.mark.parametrize(("patch", "param"), [
    ({"prompt": 5}, "prompt"),
    ({"system": []}, "system"),
    ({"images": ["aGk="]}, "images"),
    ({"raw": "no"}, "raw"),
])
def test_ollama_generate_rejects(patch: dict[str, Any], param: str) -> None:
    err = api_error(schemas.ollama_generate, {"model": "m", "prompt": "p", **patch})
    assert err.status == 400 and err.param == param


def test_ollama_embed_and_show() -> None:
    assert schemas.ollama_embed({"model": "m", "input": ["a"]}).inputs == ("a",)
    # The legacy /api/embeddings: one prompt (a string), never a list or ``input``.
    assert schemas.ollama_embeddings({"model": "m", "prompt": "a b"}).inputs == ("a b",)
    for body in ({"model": "m", "input": "a"}, {"model": "m", "prompt": ["a"]}):
        assert api_error(schemas.ollama_embeddings, body).param == "prompt"
    assert api_error(schemas.ollama_embeddings, {"prompt": "a"}).param == "model"
    assert schemas.ollama_model_name({"name": "old"}) == "old"
    assert schemas.ollama_model_name({"model": "new", "name": "old"}) == "new"
    assert api_error(schemas.ollama_model_name, {}).param == "model"


# -- management ------------------------------------------------------------------------


def test_management_bodies() -> None:
    assert schemas.load_request({"model": "m", "warmup": True}).warmup
    assert api_error(schemas.load_request, {"model": "m", "warmup": "y"}).param == "warmup"
    assert schemas.warmup_tokens({}, 16) == 16
    assert schemas.warmup_tokens({"tokens": 4}, 16) == 4
    assert api_error(schemas.warmup_tokens, {"tokens": 0}, 16).param == "tokens"


def test_every_error_is_a_4xx_with_a_message() -> None:
    # A few hostile shapes end-to-end through parse_body + the route parsers.
    for raw in (b'{"model": "m", "messages": [{"role": "user"}]}',
                b'{"model": ["m"], "messages": []}',
                json.dumps({"model": "m", "messages": [{}] * 3}).encode()):
        body = schemas.parse_body(raw)
        for parse in (schemas.openai_chat, schemas.ollama_chat):
            err = api_error(parse, body)
            assert 400 <= err.status < 500 and err.message


# -- the API refuses what the wire cannot carry (wire.limits) ---------------------------
# Each of these once passed the API and was then refused by our own infer encoder, which
# the router blamed on the (healthy) peer. Now they are a 400 naming the field.

LONE = "lone \ud800 surrogate"  # JSON "\ud800" decodes to this; UTF-8 cannot carry it
_TOO_MANY = [{"role": "user", "content": "x"}] * (limits.MAX_MESSAGES + 1)
_MAX_FIELDS = {"top_k": limits.MAX_TOP_K, "repeat_penalty": limits.MAX_REPEAT_PENALTY,
               "stop": ["🦙" * limits.MAX_STOP_CHARS] * limits.MAX_STOP}


@pytest.mark.parametrize(("patch", "param"), [
    ({"messages": _TOO_MANY}, "messages"),
    ({"top_k": limits.MAX_TOP_K + 1}, "top_k"),
    ({"repeat_penalty": limits.MAX_REPEAT_PENALTY + 0.5}, "repeat_penalty"),
    ({"stop": ["s"] * (limits.MAX_STOP + 1)}, "stop"),
    ({"stop": "x" * (limits.MAX_STOP_CHARS + 1)}, "stop"),
    ({"stop": ["ok", LONE]}, "stop[1]"),
    ({"model": "m" * (limits.MAX_MODEL_ID_CHARS + 1)}, "model"),
    ({"model": LONE}, "model"),
    ({"messages": [{"role": "user", "content": LONE}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a"},
                   {"role": "user", "content": [{"type": "text", "text": LONE}]}]},
     "messages[1].content"),
    ({"user": LONE}, "user"),
])
def test_openai_chat_refuses_what_the_wire_cannot_carry(patch: dict[str, Any],
                                                        param: str) -> None:
    err = api_error(schemas.openai_chat, {**CHAT, **patch})
    assert (err.status, err.param) == (400, param), err.message
    assert err.message.startswith(f"{param}: ")


def test_session_header_with_a_lone_surrogate_is_refused() -> None:
    err = api_error(schemas.openai_chat, CHAT, session_header=LONE)
    assert (err.status, err.param) == (400, "X-PeerLLM-Session")


def test_prompt_over_the_frame_budget_is_too_large() -> None:
    # Within the character limit, but 4 UTF-8 bytes each would overflow the 1 MiB frame.
    body = {**CHAT, "messages": [{"role": "user",
                                  "content": "🦙" * (limits.MAX_PROMPT_BYTES // 4 + 1)}]}
    err = api_error(schemas.openai_chat, body)
    assert (err.status, err.param, err.code) == (400, "messages", "prompt_too_large")


def test_openai_values_at_the_wire_limits_are_accepted() -> None:
    gen = schemas.openai_chat({**CHAT, **_MAX_FIELDS,
                               "messages": [{"role": "user", "content": "x"}]
                               * limits.MAX_MESSAGES})
    assert gen.request.params.top_k == limits.MAX_TOP_K
    assert gen.request.messages is not None and len(gen.request.messages) == limits.MAX_MESSAGES


@pytest.mark.parametrize(("patch", "param"), [
    ({"prompt": LONE}, "prompt"),
    ({"prompt": [LONE]}, "prompt"),
    ({"top_k": limits.MAX_TOP_K + 1}, "top_k"),
    ({"repeat_penalty": 11}, "repeat_penalty"),
    ({"stop": ["s"] * (limits.MAX_STOP + 1)}, "stop"),
    ({"model": LONE}, "model"),
])
def test_openai_completion_refuses_what_the_wire_cannot_carry(patch: dict[str, Any],
                                                              param: str) -> None:
    err = api_error(schemas.openai_completion, {"model": "m", "prompt": "p", **patch})
    assert (err.status, err.param) == (400, param), err.message


@pytest.mark.parametrize(("options", "param"), [
    ({"temperature": limits.MAX_TEMPERATURE + 0.5}, "options.temperature"),
    ({"temperature": -0.5}, "options.temperature"),
    ({"top_k": limits.MAX_TOP_K + 1}, "options.top_k"),
    ({"repeat_penalty": limits.MAX_REPEAT_PENALTY + 1}, "options.repeat_penalty"),
    ({"stop": ["s"] * (limits.MAX_STOP + 1)}, "options.stop"),
    ({"stop": ["x" * (limits.MAX_STOP_CHARS + 1)]}, "options.stop"),
    ({"stop": [LONE]}, "options.stop[0]"),
    ({"num_predict": limits.MAX_TOKENS + 1}, "options.num_predict"),
])
def test_ollama_options_refuse_what_the_wire_cannot_carry(options: dict[str, Any],
                                                          param: str) -> None:
    for parse, body in ((schemas.ollama_chat, {**CHAT, "options": options}),
                        (schemas.ollama_generate, {"model": "m", "prompt": "p",
                                                   "options": options})):
        err = api_error(parse, body)
        assert (err.status, err.param) == (400, param), err.message
        assert err.message.startswith(f"{param}: ")


@pytest.mark.parametrize(("patch", "param"), [
    ({"messages": _TOO_MANY}, "messages"),
    ({"messages": [{"role": "user", "content": LONE}]}, "messages[0].content"),
    ({"model": LONE}, "model"),
])
def test_ollama_chat_refuses_what_the_wire_cannot_carry(patch: dict[str, Any],
                                                        param: str) -> None:
    err = api_error(schemas.ollama_chat, {**CHAT, **patch})
    assert (err.status, err.param) == (400, param), err.message


@pytest.mark.parametrize(("patch", "param", "code"), [
    ({"prompt": LONE}, "prompt", "invalid_value"),
    ({"prompt": LONE, "raw": True}, "prompt", "invalid_value"),
    ({"system": LONE}, "system", "invalid_value"),
    ({"prompt": "x" * (limits.MAX_PROMPT_CHARS + 1)}, "prompt", "prompt_too_large"),
    ({"prompt": "x" * limits.MAX_PROMPT_CHARS, "system": "s"}, "prompt", "prompt_too_large"),
    ({"prompt": "x" * (limits.MAX_PROMPT_CHARS + 1), "raw": True}, "prompt",
     "prompt_too_large"),
])
def test_ollama_generate_names_the_body_fields(patch: dict[str, Any], param: str,
                                               code: str) -> None:
    err = api_error(schemas.ollama_generate, {"model": "m", "prompt": "p", **patch})
    assert (err.status, err.param, err.code) == (400, param, code), err.message


@pytest.mark.parametrize("parse", [schemas.openai_embeddings, schemas.ollama_embed])
def test_embedding_inputs_with_a_lone_surrogate_are_refused(parse: Any) -> None:
    err = api_error(parse, {"model": "m", "input": ["fine", LONE]})
    assert (err.status, err.param) == (400, "input[1]")
