"""Structured output and sampling options on the real bundled model (the engine level).

The fixtures (one shared llama context per module) are test_engine's.
"""

from __future__ import annotations

import json

import pytest

from peerllm.errors import InvalidInferenceRequest
from peerllm.inference.engine import ChatMessage, Engine, GenerationRequest, SamplingParams
from peerllm.inference.registry import ModelRegistry
from peerllm.inference.request import JSON_OBJECT_SCHEMA
from tests.e2e.test_engine import MODEL, PROMPT, SharedBackend, model_path, served, shared

__all__ = ["model_path", "served", "shared"]  # fixtures, used by name

ASK_JSON = (ChatMessage(role="user", content="Describe a cat as JSON with its name and age."),)
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


async def test_json_object_output_parses(served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    params = SamplingParams(max_tokens=64, temperature=0.0, json_schema=JSON_OBJECT_SCHEMA)
    text, done = await engine.complete(GenerationRequest(model=MODEL, messages=ASK_JSON,
                                                         params=params))
    assert done.finish_reason == "stop", text
    assert isinstance(json.loads(text), dict)


async def test_json_schema_output_has_the_required_keys(
        served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    params = SamplingParams(max_tokens=64, temperature=0.7, seed=7,
                            json_schema=json.dumps(PERSON))
    text, done = await engine.complete(GenerationRequest(model=MODEL, messages=ASK_JSON,
                                                         params=params))
    assert done.finish_reason == "stop", text
    value = json.loads(text)
    assert set(value) == {"name", "age"}, text
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


async def test_a_huge_negative_bias_keeps_a_token_out(
        served: tuple[Engine, ModelRegistry], shared: SharedBackend) -> None:
    engine, _ = served
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    text, _ = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT, params=greedy))
    llm = shared.instance()._llm
    first = llm.tokenize(text.encode(), add_bos=False, special=False)[0]
    banned = SamplingParams(max_tokens=8, temperature=0.0, logit_bias=((first, -100.0),))
    again, _ = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT,
                                                       params=banned))
    assert first not in llm.tokenize(again.encode(), add_bos=False, special=False)
    assert again != text


async def test_penalties_are_accepted(served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    params = SamplingParams(max_tokens=8, temperature=0.0, presence_penalty=1.5,
                            frequency_penalty=-0.5)
    text, done = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT,
                                                         params=params))
    assert text and done.completion_tokens >= 1


async def test_structured_output_does_not_resume(served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    params = SamplingParams(max_tokens=8, temperature=0.0, json_schema=JSON_OBJECT_SCHEMA)
    with pytest.raises(InvalidInferenceRequest, match="cannot resume"):
        await engine.complete(GenerationRequest(model=MODEL, messages=ASK_JSON, params=params,
                                                resume_text='{"na'))
