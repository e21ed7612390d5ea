"""Prefix affinity with real nodes: A and B serve FAKE_MODEL on slotted fake contexts, C
serves nothing. A chat's second turn sent to C without a session key lands on the node
that served its first turn, because that node's node-info advertises the conversation
(ModelInfo.prefixes); once its slot moves on, or the model is unloaded, the
advertisement goes."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import httpx

import peerllm
from peerllm.api import open_api
from peerllm.inference.prefixes import next_turn_prefix
from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams
from peerllm.node import Node
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model
from tests.slotted import SlottedBackend, SlottedInstance

CONVERSATIONS = 6
SLOTS = 2 * CONVERSATIONS  # room for every turn: no record evicts another


def advertised(front: Node, holder: str, digest: bytes) -> bool:
    """Whether ``front``'s view of ``holder`` (node-info, or its own book) lists ``digest``."""
    cands = front.router.candidates(FAKE_MODEL)[0]
    return any(c.peer_id == holder and digest in c.prefixes for c in cands)


def as_request(messages: list[dict[str, str]]) -> GenerationRequest:
    return GenerationRequest(model=FAKE_MODEL, messages=tuple(
        ChatMessage(role=m["role"], content=m["content"]) for m in messages))


async def turn(http: httpx.AsyncClient, messages: list[dict[str, Any]]) -> tuple[str, str]:
    """One chat completion through ``http``: who served it, and its text."""
    r = await http.post("/v1/chat/completions", json={
        "model": FAKE_MODEL, "messages": messages, "max_tokens": 3, "stream": False})
    assert r.status_code == 200, r.text
    return r.headers["x-peerllm-served-by"], r.json()["choices"][0]["message"]["content"]


async def test_a_second_turn_without_a_session_goes_where_the_first_was_served(
        make_config: MakeConfig) -> None:
    a_cfg = with_fake_model(make_config("a", dht=False))
    backends = {"a": SlottedBackend(slots=SLOTS), "b": SlottedBackend(slots=SLOTS)}
    async with peerllm.open_node(a_cfg, backend=backends["a"]) as a, \
            peerllm.open_node(with_fake_model(make_config("b", dht=False,
                                                          bootstrap=[a.addrs()[0]])),
                              backend=backends["b"]) as b, \
            peerllm.open_node(make_config("c", dht=False,
                                          bootstrap=[a.addrs()[0], b.addrs()[0]])) as c, \
            open_api(c) as c_url, httpx.AsyncClient(base_url=c_url, trust_env=False) as to_c:
        servers = {a.peer_id: a, b.peer_id: b}
        await wait_until(lambda: {x.peer_id for x in c.router.candidates(FAKE_MODEL)[0]}
                         == set(servers), timeout_s=30, what="c to see a and b serve the model")
        # First turns on A's own engine, then on B's: C's ranking alone (which spreads or
        # alternates) would send some second turns to the wrong node.
        first_turns: list[tuple[str, list[dict[str, str]]]] = []
        for i in range(CONVERSATIONS):
            server = a if i < CONVERSATIONS // 2 else b
            messages = [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": f"question {i}"}]
            assert server.engine is not None
            answer, _ = await server.engine.complete(dataclasses.replace(
                as_request(messages), params=SamplingParams(max_tokens=3)))
            messages += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": "and then?"}]
            first_turns.append((server.peer_id, messages))
        for holder, messages in first_turns:
            digest = next_turn_prefix(as_request(messages))
            assert digest is not None
            await wait_until(functools.partial(advertised, c, holder, digest), timeout_s=30,
                             what="the holder's node-info to advertise the conversation")
        # /v1/route on C shows how many conversations each candidate holds.
        rows = (await to_c.get("/v1/route", params={"model": FAKE_MODEL})).json()["candidates"]
        assert {r["peer_id"]: r["prefixes"] for r in rows} == {
            p: CONVERSATIONS // 2 for p in servers}
        # The second turns, through C with no session key, go to the holders.
        for holder, messages in first_turns:
            assert (await turn(to_c, messages))[0] == holder
        # A slot given to another sequence is no longer advertised.
        holder, messages = first_turns[0]
        digest = next_turn_prefix(as_request(messages))
        assert digest is not None and digest in servers[holder].local.prefixes(FAKE_MODEL)
        instance = backends[servers[holder].name].opened[-1]
        assert isinstance(instance, SlottedInstance)
        for slot in range(SLOTS):
            instance.evict(slot)
        assert servers[holder].local.prefixes(FAKE_MODEL) == ()
        await wait_until(lambda: not advertised(c, holder, digest), timeout_s=30,
                         what="the evicted conversation to leave the holder's node-info")
        # An unloaded model advertises nothing, whatever its book still says.
        other = b if servers[holder] is a else a
        assert other.engine is not None and other.local.prefixes(FAKE_MODEL)
        await other.engine.registry.unload(FAKE_MODEL)
        assert [m.prefixes for m in other.local.node_info().models] == [()]
