"""Validation of generation requests and sampling parameters (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest

from peerllm.inference.engine import ChatMessage, GenerationRequest, SamplingParams


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
])
def test_bad_sampling_value_names_the_field(field: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^{field}:"):
        SamplingParams(**{field: value})


def test_stop_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError, match=r"^stop:"):
        SamplingParams(stop="\n")  # type: ignore[arg-type]


def test_stop_list_becomes_tuple() -> None:
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_greedy_and_edge_values_allowed() -> None:
    SamplingParams(temperature=0.0, top_p=1.0, top_k=0, seed=0, max_tokens=1)
    SamplingParams(seed=2**32 - 1)


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
