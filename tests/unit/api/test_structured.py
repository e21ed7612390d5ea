"""Structured output, logit bias and penalties in the OpenAI and Ollama readers (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peerllm.api import schemas
from peerllm.api.schemas import ApiError
from peerllm.inference.request import JSON_OBJECT_SCHEMA
from peerllm.wire import limits

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}},
          "required": ["name"]}


def refused(fn: Any, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(body)
    assert info.value.status == 400
    return info.value


# -- OpenAI ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "schema"), [
    (None, None),
    ({"type": "text"}, None),
    ({"type": "json_object"}, JSON_OBJECT_SCHEMA),
    ({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}},
     json.dumps(PERSON, separators=(",", ":"))),
    ({"type": "json_schema", "json_schema": {"name": "any"}}, JSON_OBJECT_SCHEMA),
])
def test_openai_response_format_becomes_a_schema(fmt: Any, schema: str | None) -> None:
    for parse in (schemas.openai_chat, schemas.openai_completion):
        body = {**CHAT, "prompt": "p", "response_format": fmt}
        params = parse(body).request.params
        assert params.json_schema == schema
        if schema is not None:
            assert json.loads(params.json_schema or "") == json.loads(schema)


@pytest.mark.parametrize(("fmt", "param"), [
    ("json", "response_format"),
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": 3}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"strict": "yes"}},
     "response_format.json_schema.strict"),
    ({"type": "json_schema", "json_schema": {"schema": []}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "string", "maxLength": 10**6}}},
     "response_format.json_schema.schema.maxLength"),
    ({"type": "json_schema", "json_schema": {"schema": {"$ref": "https://example.com/s"}}},
     "response_format.json_schema.schema.$ref"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "string",
                                                        "pattern": "a{100000}"}}},
     "response_format.json_schema.schema.pattern"),
    ({"type": "json_schema", "json_schema": {"schema": {
        "type": "object", "description": "x" * limits.MAX_JSON_SCHEMA_CHARS}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object",
                                                        "description": "\ud800"}}},
     "response_format.json_schema.schema"),
])
def test_openai_bad_response_format_names_the_field(fmt: Any, param: str) -> None:
    err = refused(schemas.openai_chat, {**CHAT, "response_format": fmt})
    assert err.param == param and err.message.startswith(f"{param}: ")


def test_deeply_nested_schemas_are_refused() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    err = refused(schemas.openai_chat, {**CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"schema": schema}}})
    assert err.param is not None and err.param.startswith("response_format.json_schema.schema")
    assert "deeper" in err.message


def test_openai_penalties_and_logit_bias_are_honoured() -> None:
    params = schemas.openai_chat({**CHAT, "presence_penalty": -1.5, "frequency_penalty": 2,
                                  "logit_bias": {"50256": -100, "7": 3.5}}).request.params
    assert (params.presence_penalty, params.frequency_penalty) == (-1.5, 2.0)
    assert params.logit_bias == ((50256, -100.0), (7, 3.5))


@pytest.mark.parametrize(("patch", "param"), [
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"frequency_penalty": "x"}, "frequency_penalty"),
    ({"logit_bias": []}, "logit_bias"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"-1": 1}}, "logit_bias"),
    ({"logit_bias": {"1": "x"}}, "logit_bias.1"),
    ({"logit_bias": {"1": None}}, "logit_bias.1"),
    ({"logit_bias": {"1": 101}}, "logit_bias[1]"),
    ({"logit_bias": {"1": 1, "01": 2}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(limits.MAX_LOGIT_BIAS + 1)}}, "logit_bias"),
    ({"logit_bias": {str(2**40): 1}}, "logit_bias"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"audio": {"voice": "x"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"web_search_options": {}}, None),  # empty: nothing asked
    ({"web_search_options": {"search_context_size": "low"}}, "web_search_options"),
])
def test_openai_sampling_fields_refused_by_name(patch: dict[str, Any], param: str | None) -> None:
    body = {**CHAT, **patch}
    if param is None:
        schemas.openai_chat(body)
        return
    err = refused(schemas.openai_chat, body)
    assert err.param == param, err.message


@pytest.mark.parametrize("patch", [
    {"tool_choice": "none"}, {"tool_choice": "auto"}, {"modalities": ["text"]},
    {"user": "u"}, {"store": False}, {"metadata": {"k": "v"}}, {"service_tier": "auto"},
    {"parallel_tool_calls": True}, {"top_logprobs": 0}, {"logprobs": False},
])
def test_openai_harmless_fields_are_accepted(patch: dict[str, Any]) -> None:
    schemas.openai_chat({**CHAT, **patch})


# -- Ollama ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "schema"), [
    (None, None), ("", None), ("json", JSON_OBJECT_SCHEMA), (PERSON, json.dumps(PERSON)),
])
def test_ollama_format(fmt: Any, schema: str | None) -> None:
    for gen in (schemas.ollama_chat({**CHAT, "format": fmt}),
                schemas.ollama_generate({**CHAT, "prompt": "p", "format": fmt})):
        assert gen is not None
        got = gen.request.params.json_schema
        assert (got if got is None else json.loads(got)) == (
            schema if schema is None else json.loads(schema))


@pytest.mark.parametrize(("patch", "param"), [
    ({"format": "yaml"}, "format"),
    ({"format": 3}, "format"),
    ({"format": {"type": "nonsense"}}, "format"),
    ({"format": {"type": "array", "minItems": 10**6}}, "format.minItems"),
    ({"options": {"presence_penalty": 3}}, "options.presence_penalty"),
    ({"options": {"frequency_penalty": -2.5}}, "options.frequency_penalty"),
    ({"options": {"mirostat": 2}}, "options.mirostat"),
    ({"options": {"typical_p": 0.5}}, "options.typical_p"),
    ({"options": {"min_p": 0.1}}, "options.min_p"),
    ({"options": {"repeat_last_n": 128}}, "options.repeat_last_n"),
    ({"think": True}, "think"),
])
def test_ollama_fields_refused_by_name(patch: dict[str, Any], param: str) -> None:
    err = refused(schemas.ollama_chat, {**CHAT, **patch})
    assert err.param == param, err.message


@pytest.mark.parametrize(("patch", "param"), [
    ({"context": [1, 2, 3]}, "context"),
    ({"template": "{{ .Prompt }}"}, "template"),
])
def test_ollama_generate_refuses_prompt_overrides(patch: dict[str, Any], param: str) -> None:
    err = refused(schemas.ollama_generate, {**CHAT, "prompt": "p", **patch})
    assert err.param == param


def test_ollama_penalties_and_defaults_are_accepted() -> None:
    gen = schemas.ollama_chat({**CHAT, "think": False, "options": {
        "presence_penalty": 0.5, "frequency_penalty": 1, "repeat_penalty": 1.2,
        "mirostat": 0, "typical_p": 1.0, "min_p": 0.05, "repeat_last_n": 64,
        "num_ctx": 4096, "num_thread": 2}})
    params = gen.request.params
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, 1.0)
    assert params.repeat_penalty == 1.2
