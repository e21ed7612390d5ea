"""Embedding batches on the real bundled model: concurrent requests share embed calls
(hence llama_decode calls) and get the vectors each would get alone."""

from __future__ import annotations

import math

import trio

from peerllm.config import InferenceConfig
from peerllm.inference.backend import Embedded
from peerllm.inference.catalog import assemble_bundled
from peerllm.inference.engine import Engine
from peerllm.inference.registry import open_registry
from peerllm.inference.specs import ModelSpec

REQUESTS = (["The cat sat on the mat."], ["Paris is in France.", "Rome is in Italy."],
            ["def add(a, b): return a + b"], ["A completely different sentence here."])


def close_to(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, abs_tol=1e-4)
                                    for x, y in zip(a, b, strict=True))


async def test_concurrent_embeddings_share_calls_and_match_alone() -> None:
    spec = ModelSpec(id="gemma", path=assemble_bundled(), chat_format="gemma",
                     context_size=512)
    config = InferenceConfig(n_threads=2, warmup_tokens=0, max_queue=8)
    async with open_registry([spec], config=config) as registry:
        engine = Engine(registry)
        alone = [await engine.embed("gemma", inputs) for inputs in REQUESTS]
        before = engine.embedding_statistics()
        together: dict[int, Embedded] = {}

        async def one(i: int) -> None:
            together[i] = await engine.embed("gemma", REQUESTS[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(REQUESTS)):
                nursery.start_soon(one, i)
        after = engine.embedding_statistics()
    assert after.requests - before.requests == len(REQUESTS)
    assert after.batches - before.batches < len(REQUESTS)
    for i, single in enumerate(alone):
        got = together[i]
        assert got.prompt_tokens == single.prompt_tokens
        assert all(close_to(a, b) for a, b in zip(got.vectors, single.vectors, strict=True))
