"""Embeddings of the bundled model through a node that does not hold it: the official
``openai`` and ``ollama`` clients against B get A's vectors over /peerllm/embed, with
real token counts, the same as asking A itself."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import ollama
import openai
import pytest

import peerllm
from peerllm.api import open_api
from tests.helpers import MODEL, api_url, node_config, wait_until

TEXTS = ["The cat sat on the mat.", "Stock markets fell today."]


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[peerllm.Node, peerllm.Node]]:
    """A serves the bundled model; B serves nothing and knows A."""
    a_cfg = node_config(tmp_path, "a", dht=False, serve_default=True)
    async with peerllm.open_node(a_cfg) as a, open_api(a):
        b_cfg = node_config(tmp_path, "b", dht=False, bootstrap=[a.addrs()[0]])
        async with peerllm.open_node(b_cfg) as b, open_api(b):
            await wait_until(lambda: bool(b.router.candidates(MODEL)[0]), timeout_s=30,
                             what="b to see the model")
            yield a, b


def openai_for(node: peerllm.Node) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=api_url(node) + "/v1", api_key="x", max_retries=0,
                              http_client=openai.DefaultAsyncHttpxClient(trust_env=False))


async def test_openai_and_ollama_clients_embed_through_b(
        mesh: tuple[peerllm.Node, peerllm.Node]) -> None:
    a, b = mesh
    async with openai_for(a) as at_a, openai_for(b) as at_b:
        raw = await at_b.embeddings.with_raw_response.create(model=MODEL, input=TEXTS)
        assert raw.headers["x-peerllm-served-by"] == a.peer_id
        through = raw.parse()
        direct = await at_a.embeddings.create(model=MODEL, input=TEXTS)
        assert [d.index for d in through.data] == [0, 1]
        for got, want in zip(through.data, direct.data, strict=True):
            assert len(got.embedding) == len(want.embedding) == 640
            assert got.embedding == pytest.approx(want.embedding, abs=1e-5)
            assert math.isclose(math.fsum(x * x for x in got.embedding), 1.0, rel_tol=1e-3)
        assert through.usage.prompt_tokens == direct.usage.prompt_tokens >= len(TEXTS)
        assert through.usage.total_tokens == through.usage.prompt_tokens
        flt = await at_b.embeddings.create(model=MODEL, input=TEXTS[0],
                                           encoding_format="float")
        assert flt.data[0].embedding == pytest.approx(direct.data[0].embedding, abs=1e-5)

    client = ollama.AsyncClient(host=api_url(b), trust_env=False)
    try:
        emb = await client.embed(model=MODEL, input=TEXTS)
        assert len(emb.embeddings) == 2
        for got, want in zip(emb.embeddings, direct.data, strict=True):
            assert list(got) == pytest.approx(want.embedding, abs=1e-5)
        assert emb.prompt_eval_count == direct.usage.prompt_tokens
        # llama.cpp's vectors depend a little on the batch: compare one input with one.
        legacy = await client.embeddings(model=MODEL, prompt=TEXTS[0])
        assert list(legacy.embedding) == pytest.approx(flt.data[0].embedding, abs=1e-5)
        with pytest.raises(ollama.ResponseError) as nf:
            await client.embed(model="no-such-model", input="x")
        assert nf.value.status_code == 404 and "no-such-model" in nf.value.error
    finally:
        await client.close()  # type: ignore[no-untyped-call]  # has __aexit__, no __aenter__
    # B placed every request on A; A counted them as served (tokens in, none out).
    assert {u.kind for u in b.usage.recent()} == {"forwarded"}
    assert all(u.verified and u.tokens_in and u.tokens_out == 0 for u in b.usage.recent())
