"""The official openai, ollama and anthropic clients against a node that requires tokens
(real model)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import ollama
import openai
import pytest

import peerllm
from peerllm.api import open_api
from peerllm.auth import Role
from peerllm.config import AuthConfig
from tests.e2e.test_openai_client import _CLIENT_GENERATORS
from tests.helpers import MODEL, api_url, node_config

pytestmark = pytest.mark.filterwarnings(_CLIENT_GENERATORS)


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[peerllm.Node]:
    cfg = node_config(tmp_path, "guarded", dht=False, serve_default=True)
    cfg = dataclasses.replace(cfg, auth=AuthConfig(required=True))
    async with peerllm.open_node(cfg) as n, open_api(n):
        yield n


def openai_client(node: peerllm.Node, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=api_url(node) + "/v1", api_key=key, max_retries=0,
                              http_client=openai.DefaultAsyncHttpxClient(trust_env=False))


async def test_openai_client_with_and_without_a_token(guarded: peerllm.Node) -> None:
    now = int(time.time())
    token, _ = guarded.authority.create_token(subject="sdk", roles=[Role.USER], ttl_s=600,
                                              now=now, tokens_per_min=10_000)
    async with openai_client(guarded, token) as client:
        answer = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=4,
            temperature=0)
        assert answer.choices[0].message.content is not None
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
        listed = await client.models.list()  # readonly: a user may
        assert MODEL in [m.id for m in listed.data]
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.post("/models/load", body={"model": MODEL}, cast_to=object)
        assert denied.value.status_code == 403
        assert "needs the 'operator' role" in denied.value.message
    async with openai_client(guarded, "sk-not-a-token") as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert refused.value.status_code == 401
        assert refused.value.code == "malformed"


async def test_ollama_client_with_and_without_a_token(guarded: peerllm.Node) -> None:
    token, _ = guarded.authority.create_token(subject="ollama", roles=[Role.USER], ttl_s=600,
                                              now=int(time.time()))
    client = ollama.AsyncClient(host=api_url(guarded), trust_env=False,
                                headers={"Authorization": f"Bearer {token}"})
    try:
        whole = await client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi."}],
                                  options={"num_predict": 4, "temperature": 0}, stream=False)
        assert whole.done
    finally:
        await client.close()  # type: ignore[no-untyped-call]
    anonymous = ollama.AsyncClient(host=api_url(guarded), trust_env=False)
    try:
        with pytest.raises(ollama.ResponseError) as refused:
            await anonymous.list()
        assert refused.value.status_code == 401
        assert isinstance(refused.value.error, str)
        assert "requires a token" in refused.value.error
    finally:
        await anonymous.close()  # type: ignore[no-untyped-call]


async def test_anthropic_client_sends_its_key_as_x_api_key(guarded: peerllm.Node) -> None:
    token, _ = guarded.authority.create_token(subject="claude", roles=[Role.USER], ttl_s=600,
                                              now=int(time.time()))

    def client(key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=api_url(guarded), api_key=key, max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(trust_env=False))

    hi: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hi."}]
    async with client(token) as c:
        answer = await c.messages.create(model=MODEL, max_tokens=4, messages=hi)
        assert answer.content and answer.usage.output_tokens >= 1
    async with client("sk-ant-not-a-token") as c:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await c.messages.create(model=MODEL, max_tokens=4, messages=hi)
        assert refused.value.status_code == 401
        body = refused.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "authentication_error" and body["error"]["message"]
