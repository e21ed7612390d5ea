"""Prefix affinity on the real bundled model: A and B serve it batched (parallel 2), C
serves nothing. A chat's first turn runs on A; its second turn, sent to C without a
session key, is placed on A (whose node-info advertises the conversation) and A's slot
reuses the first turn's tokens instead of prefilling them again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx

import peerllm
from peerllm.api import open_api
from peerllm.config import NodeConfig
from peerllm.inference.backend import OpenOptions, StopCheck
from peerllm.inference.batched_llama import BatchedLlamaInstance
from peerllm.inference.llama import LlamaBackend, LlamaInstance
from peerllm.inference.prefixes import next_turn_prefix
from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams
from tests.helpers import MODEL, node_config, wait_until

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


class KeepingBackend(LlamaBackend):
    """llama.cpp, keeping the contexts it opens (the test reads their statistics)."""

    def __init__(self) -> None:
        self.opened: list[LlamaInstance | BatchedLlamaInstance] = []

    def open(self, path: Path, options: OpenOptions, *, should_stop: StopCheck
             ) -> LlamaInstance | BatchedLlamaInstance:
        instance = super().open(path, options, should_stop=should_stop)
        self.opened.append(instance)
        return instance


def batched(cfg: NodeConfig) -> NodeConfig:
    return dataclasses.replace(cfg, inference=dataclasses.replace(
        cfg.inference, parallel=2, warmup_tokens=0, n_threads=1))


async def test_the_second_turn_through_another_node_reuses_the_holders_cache(
        tmp_path: Path) -> None:
    keep_a = KeepingBackend()
    async with peerllm.open_node(batched(node_config(tmp_path, "a", dht=False,
                                                     serve_default=True)),
                                 backend=keep_a) as a, \
            peerllm.open_node(batched(node_config(tmp_path, "b", dht=False, serve_default=True,
                                                  bootstrap=[a.addrs()[0]]))) as b, \
            peerllm.open_node(node_config(tmp_path, "c", dht=False,
                                          bootstrap=[a.addrs()[0], b.addrs()[0]])) as c, \
            open_api(c) as url, httpx.AsyncClient(base_url=url, trust_env=False,
                                                  timeout=120) as http:
        await wait_until(lambda: {x.peer_id for x in c.router.candidates(MODEL)[0]}
                         == {a.peer_id, b.peer_id}, timeout_s=60,
                         what="c to see a and b serve the model")
        question = ChatMessage(role="user", content="Name a colour.")
        assert a.engine is not None
        answer, done = await a.engine.complete(GenerationRequest(
            model=MODEL, messages=(question,), params=GREEDY))
        assert done.finish_reason in ("stop", "length")
        instance = keep_a.opened[-1]
        assert isinstance(instance, BatchedLlamaInstance)
        turn2 = (question, ChatMessage(role="assistant", content=answer),
                 ChatMessage(role="user", content="And another one?"))
        digest = next_turn_prefix(GenerationRequest(model=MODEL, messages=turn2))
        assert digest is not None and digest in a.local.prefixes(MODEL)
        await wait_until(lambda: any(x.peer_id == a.peer_id and digest in x.prefixes
                                     for x in c.router.candidates(MODEL)[0]), timeout_s=30,
                         what="c to see a advertise the conversation")
        before = instance.statistics().reused_tokens
        r = await http.post("/v1/chat/completions", json={
            "model": MODEL, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": m.role, "content": m.content} for m in turn2]})
        assert r.status_code == 200, r.text
        assert r.headers["x-peerllm-served-by"] == a.peer_id
        first_prompt = len(instance.encode(messages=(question,), prompt=None,
                                           resume_text="").tokens)
        assert instance.statistics().reused_tokens - before >= first_prompt
