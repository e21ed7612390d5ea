"""Validation of generation requests and sampling parameters (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest

from peerllm.errors import InvalidField
from peerllm.inference.engine import ChatMessage, GenerationRequest, SamplingParams
from peerllm.wire import limits


def test_defaults_are_valid() -> None:
    p = SamplingParams()
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.repeat_penalty) == (
        256, 0.8, 0.95, 40, 1.1)
    assert p.stop == () and p.seed is None


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 1.5), ("max_tokens", True),
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_p", 0.0), ("top_p", 1.01), ("top_k", -1), ("top_k", 2.0),
    ("repeat_penalty", 0.0), ("repeat_penalty", -1.0),
    ("seed", -1), ("seed", 2**32), ("seed", "7"),
    ("stop", ("",)), ("stop", ("x" * 257,)), ("stop", tuple("abcdefghijklmnopq")),
    # the infer protocol's limits (wire.limits), so that every request can reach any peer
    ("max_tokens", limits.MAX_TOKENS + 1), ("top_k", limits.MAX_TOP_K + 1),
    ("temperature", limits.MAX_TEMPERATURE + 0.01),
    ("repeat_penalty", limits.MAX_REPEAT_PENALTY + 0.01),
    ("stop", ("s",) * (limits.MAX_STOP + 1)), ("stop", ("x" * (limits.MAX_STOP_CHARS + 1),)),
    ("stop", ("ok", "lone \ud800")),
])
def test_bad_sampling_value_names_the_field(field: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^{field}(\[\d+\])?:"):
        SamplingParams(**{field: value})


def test_stop_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError, match=r"^stop:"):
        SamplingParams(stop="\n")  # type: ignore[arg-type]


def test_stop_list_becomes_tuple() -> None:
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_greedy_and_edge_values_allowed() -> None:
    SamplingParams(temperature=0.0, top_p=1.0, top_k=0, seed=0, max_tokens=1)
    SamplingParams(seed=2**32 - 1)
    SamplingParams(max_tokens=limits.MAX_TOKENS, temperature=limits.MAX_TEMPERATURE,
                   top_k=limits.MAX_TOP_K, repeat_penalty=limits.MAX_REPEAT_PENALTY,
                   stop=("🦙" * limits.MAX_STOP_CHARS,) * limits.MAX_STOP)


def test_refusals_are_invalid_field_with_the_field_named() -> None:
    with pytest.raises(InvalidField) as info:
        SamplingParams(stop=("ok", "\udfff"))
    assert info.value.field == "stop[1]" and "surrogate" in info.value.problem
    assert not info.value.too_large


def test_chat_message_roles() -> None:
    for role in ("system", "user", "assistant"):
        ChatMessage(role=role, content="x")
    with pytest.raises(ValueError, match=r"^role:"):
        ChatMessage(role="tool", content="x")


def test_request_needs_exactly_one_of_messages_or_prompt() -> None:
    msgs = (ChatMessage(role="user", content="hi"),)
    GenerationRequest(model="m", prompt="hi")
    GenerationRequest(model="m", messages=msgs)
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest(model="m")
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest(model="m", prompt="hi", messages=msgs)


def test_request_validation() -> None:
    with pytest.raises(ValueError, match=r"^model:"):
        GenerationRequest(model=" ", prompt="x")
    with pytest.raises(ValueError, match=r"^messages:"):
        GenerationRequest(model="m", messages=())
    req = GenerationRequest(model="m", messages=[ChatMessage(role="user", content="a")])  # type: ignore[arg-type]
    assert isinstance(req.messages, tuple)
    assert req.params == SamplingParams() and req.resume_text == ""


def user(content: str) -> ChatMessage:
    return ChatMessage(role="user", content=content)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"model": "m" * (limits.MAX_MODEL_ID_CHARS + 1), "prompt": "x"}, "model"),
    ({"model": "m\ud800", "prompt": "x"}, "model"),
    ({"prompt": "x\udc00y"}, "prompt"),
    ({"prompt": "x", "resume_text": "\ud83d"}, "resume_text"),
    ({"messages": (user("a"), user("b\ud800"))}, "messages[1].content"),
    ({"messages": (user("a"),) * (limits.MAX_MESSAGES + 1)}, "messages"),
])
def test_request_limits_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        GenerationRequest(**{"model": "m", **kwargs})
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prompt": "x" * (limits.MAX_PROMPT_CHARS + 1)}, "prompt"),
    ({"prompt": "x" * limits.MAX_PROMPT_CHARS, "resume_text": "y"}, "prompt"),
    ({"messages": (user("x" * (limits.MAX_PROMPT_CHARS // 2)),) * 2, "resume_text": "y"},
     "messages"),
    # within the character limit, but four UTF-8 bytes each would overflow a 1 MiB frame
    ({"prompt": "🦙" * (limits.MAX_PROMPT_BYTES // 4 + 1)}, "prompt"),
])
def test_prompt_size_limits_are_too_large(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        GenerationRequest(**{"model": "m", **kwargs})
    assert info.value.field == field and info.value.too_large


def test_requests_at_the_limits_are_valid() -> None:
    GenerationRequest(model="m" * limits.MAX_MODEL_ID_CHARS,
                      messages=(user("x"),) * limits.MAX_MESSAGES)
    GenerationRequest(model="m", prompt="x" * (limits.MAX_PROMPT_CHARS - 1), resume_text="y")
    GenerationRequest(model="m", prompt="🦙" * (limits.MAX_PROMPT_BYTES // 4))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"presence_penalty": 2.01}, "presence_penalty"),
    ({"frequency_penalty": -2.01}, "frequency_penalty"),
    ({"frequency_penalty": float("inf")}, "frequency_penalty"),
    ({"logit_bias": ((-1, 1.0),)}, "logit_bias"),
    ({"logit_bias": ((limits.MAX_TOKEN_ID + 1, 1.0),)}, "logit_bias"),
    ({"logit_bias": ((3, 100.5),)}, "logit_bias[3]"),
    ({"logit_bias": ((3, 1.0), (3, 2.0))}, "logit_bias"),
    ({"logit_bias": tuple((i, 1.0) for i in range(limits.MAX_LOGIT_BIAS + 1))}, "logit_bias"),
    ({"json_schema": ""}, "json_schema"),
    ({"json_schema": "x" * (limits.MAX_JSON_SCHEMA_CHARS + 1)}, "json_schema"),
    ({"json_schema": '"\ud800"'}, "json_schema"),
])
def test_output_shaping_limits_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        SamplingParams(**kwargs)
    assert info.value.field == field


def test_output_shaping_values_at_the_limits() -> None:
    p = SamplingParams(presence_penalty=-2, frequency_penalty=2, json_schema="{}",
                       logit_bias=[(0, -100), (limits.MAX_TOKEN_ID, 100)])
    assert p.logit_bias == ((0, -100.0), (limits.MAX_TOKEN_ID, 100.0))
