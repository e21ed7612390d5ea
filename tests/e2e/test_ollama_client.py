"""The official ``ollama`` client against a real node serving the bundled model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import ollama
import pytest

import peerllm
from tests.helpers import MODEL, api_url

HELLO = [{"role": "user", "content": "Say hello."}]
OPTIONS = {"num_predict": 8, "temperature": 0}


@asynccontextmanager
async def client_for(node: peerllm.Node) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=api_url(node), trust_env=False)
    try:
        yield client
    finally:
        await client.close()  # type: ignore[no-untyped-call]  # has __aexit__, no __aenter__


async def test_ollama_client(node: peerllm.Node) -> None:
    async with client_for(node) as client:
        await check_ollama_client(node, client)


async def check_ollama_client(node: peerllm.Node, client: ollama.AsyncClient) -> None:
    tags = await client.list()
    mine = next(m for m in tags.models if m.model == MODEL)
    assert mine.details is not None and mine.details.format == "gguf"
    assert mine.details.quantization_level == "Q4_K_M" and mine.size

    whole = await client.chat(model=MODEL, messages=HELLO, options=OPTIONS, stream=False)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count is not None and 0 < whole.eval_count <= 8
    assert whole.prompt_eval_count and whole.total_duration

    parts = [p async for p in await client.chat(model=MODEL, messages=HELLO, options=OPTIONS,
                                                stream=True)]
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content

    gen = await client.generate(model=MODEL, prompt="Say hello.", options=OPTIONS)
    assert gen.done and gen.response == whole.message.content  # same template, greedy
    streamed = [p async for p in await client.generate(model=MODEL, prompt="The sky is",
                                                       raw=True, options=OPTIONS,
                                                       stream=True)]
    assert streamed[-1].done and "".join(p.response or "" for p in streamed)

    emb = await client.embed(model=MODEL, input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 0

    ps = await client.ps()
    loaded = next(m for m in ps.models if m.model == MODEL)
    assert loaded.size and loaded.expires_at is not None

    show = await client.show(MODEL)
    assert show.details is not None and show.details.family == "gemma3"
    assert show.modelinfo is not None and show.modelinfo["general.architecture"] == "gemma3"

    with pytest.raises(ollama.ResponseError) as nf:
        await client.chat(model="no-such-model", messages=HELLO, stream=False)
    assert nf.value.status_code == 404 and "no-such-model" in nf.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        await client.chat(model=MODEL, messages=HELLO, options={"temperature": "hot"})
    assert bad.value.status_code == 400 and "options.temperature" in bad.value.error

    async with httpx.AsyncClient(base_url=api_url(node), trust_env=False) as http:
        version = (await http.get("/api/version")).json()
        assert version == {"version": peerllm.__version__}
