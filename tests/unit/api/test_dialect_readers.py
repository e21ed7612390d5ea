"""Reading Responses (``/v1/responses``) and Anthropic Messages (``/v1/messages``) bodies:
what each field becomes, and a 400 naming the field for what is malformed or refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.api._anthropic_readers import messages_request
from peerllm.api._responses_readers import responses_request
from peerllm.api.schemas import ApiError
from peerllm.inference.engine import ChatMessage
from peerllm.wire import limits


def refused(fn: Any, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(body)
    assert info.value.status == 400
    return info.value


# -- Responses --------------------------------------------------------------------------


def test_a_string_input_is_one_user_turn_after_the_instructions() -> None:
    gen = responses_request({"model": " m ", "input": "hi", "instructions": "Be brief.",
                             "max_output_tokens": 9, "temperature": 0.5, "top_p": 0.9,
                             "stream": True, "user": "u1"}, session_header=None)
    req = gen.request
    assert req.model == "m" and gen.stream and gen.session == "u1"
    assert req.messages == (ChatMessage(role="system", content="Be brief."),
                            ChatMessage(role="user", content="hi"))
    assert (req.params.max_tokens, req.params.temperature, req.params.top_p) == (9, 0.5, 0.9)


def test_message_items_with_parts_and_roles() -> None:
    gen = responses_request({"model": "m", "input": [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
        {"role": "user", "content": "d"}]}, session_header="s")
    assert gen.request.messages == (
        ChatMessage(role="system", content="rules"), ChatMessage(role="user", content="a\nb"),
        ChatMessage(role="assistant", content="c"), ChatMessage(role="user", content="d"))
    assert gen.session == "s" and not gen.stream


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "name": "f"}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"background": True}, "background"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"truncation": "auto"}, "truncation"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": []}, "input"),
    ({"input": 3}, "input"),
    ({"instructions": ["x"]}, "instructions"),
    ({"temperature": 2.5}, "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "\ud800"}, "input"),
    ({"input": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}]},
     "input[1].content"),
    ({"instructions": "\ud800"}, "instructions"),
])
def test_responses_refusals_name_the_field(extra: dict[str, Any], param: str) -> None:
    assert refused(responses_request, {"model": "m", "input": "hi"} | extra).param == param


def test_responses_accept_what_does_not_change_the_answer() -> None:
    gen = responses_request({"model": "m", "input": "hi", "store": True, "metadata": {"a": 1},
                             "tool_choice": "auto", "tools": [], "truncation": "disabled",
                             "text": {"format": {"type": "text"}}, "parallel_tool_calls": True})
    assert gen.request.messages == (ChatMessage(role="user", content="hi"),)


def test_an_over_long_input_is_named() -> None:
    err = refused(responses_request,
                  {"model": "m", "input": "x" * (limits.MAX_PROMPT_CHARS + 1)})
    assert err.param == "input" and err.code == "prompt_too_large"


# -- Anthropic --------------------------------------------------------------------------


def test_system_blocks_turns_and_sampling() -> None:
    gen = messages_request({
        "model": "m", "max_tokens": 5, "temperature": 0.2, "top_p": 0.8, "top_k": 7,
        "stop_sequences": ["\n\n"], "stream": True, "metadata": {"user_id": "u9"},
        "system": [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                   "cache_control": {"type": "ephemeral"}}]},
                     {"role": "assistant", "content": "hello"},
                     {"role": "user", "content": "again"}]})
    req = gen.request
    assert req.messages == (ChatMessage(role="system", content="Be\nbrief."),
                            ChatMessage(role="user", content="hi"),
                            ChatMessage(role="assistant", content="hello"),
                            ChatMessage(role="user", content="again"))
    p = req.params
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.stop) == (5, 0.2, 0.8, 7, ("\n\n",))
    assert gen.stream and gen.session == "u9" and req.resume_text == ""


def test_a_last_assistant_turn_is_a_prefill() -> None:
    gen = messages_request({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is"}]})
    assert gen.request.messages == (ChatMessage(role="user", content="Name a colour."),)
    assert gen.request.resume_text == "The colour is"


@pytest.mark.parametrize(("extra", "param"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"stop_sequences": "x" * 100}, "stop_sequences"),
    ({"tools": [{"name": "f", "input_schema": {}}]}, "tools"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config"),
    ({"mcp_servers": [{"url": "x"}]}, "mcp_servers"),
    ({"system": 3}, "system"),
    ({"system": [{"type": "image"}]}, "system[0]"),
    ({"system": "\ud800"}, "system"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
     "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
     "messages[0].content[0]"),
    ({"messages": [{"role": "assistant", "content": "prefill only"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}]},
     "messages[1].content"),
    ({"system": "s", "messages": [{"role": "user", "content": "\ud800"}]},
     "messages[0].content"),
    ({"metadata": "x"}, "metadata"),
])
def test_messages_refusals_name_the_field(extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    assert refused(messages_request, body | extra).param == param


def test_disabled_thinking_is_fine() -> None:
    gen = messages_request({"model": "m", "max_tokens": 4, "thinking": {"type": "disabled"},
                            "messages": [{"role": "user", "content": "hi"}]})
    assert gen.request.messages == (ChatMessage(role="user", content="hi"),)


def test_a_prefill_that_overflows_the_prompt_is_named() -> None:
    err = refused(messages_request, {"model": "m", "max_tokens": 4, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "x" * limits.MAX_PROMPT_CHARS}]})
    assert err.param == "messages[1].content" and err.code == "prompt_too_large"


# Any JSON value anywhere: the readers answer a Generation or a 400, nothing else.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(
    ["", "m", "user", "assistant", "text", "input_text", "\ud800", "enabled"])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["type", "role", "content", "text"]),
                                      inner, max_size=3), max_leaves=8)
KEYS = st.sampled_from(["model", "input", "instructions", "max_output_tokens", "temperature",
                        "top_p", "stream", "text", "tools", "messages", "system",
                        "max_tokens", "top_k", "stop_sequences", "metadata", "thinking"])


@given(st.dictionaries(KEYS, JSON, max_size=6))
def test_any_body_is_a_generation_or_a_400(body: dict[str, Any]) -> None:
    for read in (responses_request, messages_request):
        errors: list[ApiError] = []
        try:
            read(body)
        except ApiError as err:
            errors.append(err)
        assert all(e.status == 400 and e.param for e in errors)
