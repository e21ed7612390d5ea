"""Structured output and sampling options through the official clients and the mesh.

Two in-process nodes: "server" serves the bundled model, "front" serves none, so every
request to front's API is forwarded to server: the schema travels on the wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import ollama
import openai
import pydantic
import pytest

import peerllm
from peerllm.api import open_api
from tests.e2e.test_openai_client import _CLIENT_GENERATORS
from tests.helpers import MODEL, MakeConfig, wait_until

pytestmark = pytest.mark.filterwarnings(_CLIENT_GENERATORS)

ASK = [{"role": "user", "content": "Give me a cat as JSON with its name and age."}]


class Cat(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    age: int


@pytest.fixture
async def mesh(make_config: MakeConfig) -> AsyncIterator[tuple[peerllm.Node, str]]:
    """(server, front's API URL) once front routes the model to server."""
    async with peerllm.open_node(make_config("server", dht=False,
                                             serve_default=True)) as server, \
            peerllm.open_node(make_config("front", bootstrap=[server.addrs()[0]],
                                          dht=False)) as front, \
            open_api(front) as url:
        await wait_until(lambda: bool(front.router.candidates(MODEL)[0]), timeout_s=30,
                         what="front sees server's model")
        yield server, url


async def test_openai_structured_output_through_the_mesh(
        mesh: tuple[peerllm.Node, str]) -> None:
    server, url = mesh
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=ASK, max_tokens=64, temperature=0,  # type: ignore[arg-type]
            response_format={"type": "json_object"})
        assert raw.headers["x-peerllm-served-by"] == server.peer_id  # it went over the mesh
        whole = raw.parse()
        assert whole.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(whole.choices[0].message.content or ""), dict)

        parsed = await client.chat.completions.parse(
            model=MODEL, messages=ASK, max_tokens=64, temperature=0,  # type: ignore[arg-type]
            response_format=Cat)
        cat = parsed.choices[0].message.parsed
        assert isinstance(cat, Cat) and len(cat.name) <= 12

        shaped = await client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=8, temperature=0,  # type: ignore[arg-type]
            presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"0": -100})
        assert shaped.choices[0].message.content

        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model=MODEL, messages=ASK, max_tokens=8,  # type: ignore[arg-type]
                response_format={"type": "json_schema", "json_schema": {
                    "name": "bad", "schema": {"type": "nonsense"}}})
        assert "response_format.json_schema.schema" in str(info.value)


async def test_ollama_format_through_the_mesh(mesh: tuple[peerllm.Node, str]) -> None:
    _, url = mesh
    client = ollama.AsyncClient(host=url, trust_env=False)
    try:
        whole = await client.chat(model=MODEL, messages=ASK, format=Cat.model_json_schema(),
                                  options={"num_predict": 64, "temperature": 0})
        content = whole.message.content or ""
        Cat.model_validate_json(content)  # the keys and their types are there
        assert {"name", "age"} <= set(json.loads(content))
        gen = await client.generate(model=MODEL, prompt="A cat as JSON:", format="json",
                                    options={"num_predict": 64, "temperature": 0,
                                             "presence_penalty": 0.2})
        assert isinstance(json.loads(gen.response), dict)
        with pytest.raises(ollama.ResponseError) as info:
            await client.chat(model=MODEL, messages=ASK, options={"mirostat": 2})
        assert info.value.status_code == 400 and "options.mirostat" in str(info.value.error)
    finally:
        await client.close()  # type: ignore[no-untyped-call]


async def test_raw_http_structured_output_locally(node: peerllm.Node) -> None:
    from tests.helpers import api_url

    async with httpx.AsyncClient(base_url=api_url(node), trust_env=False, timeout=60) as http:
        r = await http.post("/api/chat", json={
            "model": MODEL, "messages": ASK, "stream": False, "format": "json",
            "options": {"num_predict": 64, "temperature": 0}})
        assert r.status_code == 200, r.text
        assert isinstance(json.loads(r.json()["message"]["content"]), dict)
