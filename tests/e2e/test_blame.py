"""Who broke it is kept: requests we cannot send and busy peers never count against a peer.

Two in-process nodes: "server" serves the bundled model, "front" serves none, so every
request to front's API is routed to server over the mesh.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from tests.helpers import MODEL, MakeConfig, wait_until


@pytest.fixture
async def mesh(make_config: MakeConfig
               ) -> AsyncIterator[tuple[peerllm.Node, peerllm.Node, httpx.AsyncClient]]:
    async with peerllm.open_node(make_config("server", dht=False,
                                             serve_default=True)) as server, \
            peerllm.open_node(make_config("front", bootstrap=[server.addrs()[0]],
                                          dht=False)) as front, \
            open_api(front) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=120) as http:
        await wait_until(lambda: bool(front.router.candidates(MODEL)[0]), timeout_s=30,
                         what="front sees server's model")
        yield server, front, http


def chat(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2, "temperature": 0, **extra}


# Each of these passed the API before and was then refused by our own wire encoder, and
# the router blamed the healthy peer.
BAD = {
    "messages": chat(messages=[{"role": "user", "content": "x"}] * 300),
    "top_k": chat(top_k=2000),
    "repeat_penalty": chat(repeat_penalty=50),
    "stop": chat(stop=[f"s{i}" for i in range(9)]),
    "stop-length": chat(stop=["x" * 100]),
}


def breaker(front: peerllm.Node, server: peerllm.Node) -> str:
    return front.router.breakers.describe(server.peer_id)


@pytest.mark.parametrize("field", sorted(BAD))
async def test_a_request_our_wire_cannot_carry_is_a_400_and_the_peer_stays_healthy(
        mesh: tuple[peerllm.Node, peerllm.Node, httpx.AsyncClient], field: str) -> None:
    server, front, http = mesh
    for _ in range(4):  # more than the breaker's threshold of 3
        r = await http.post("/v1/chat/completions", json=BAD[field])
        assert r.status_code == 400, r.text
        assert field.split("-")[0] in r.json()["error"]["message"]
    assert breaker(front, server).startswith("closed")
    assert front.registry.get(server.peer_id).state.value == "healthy"  # type: ignore[union-attr]
    r = await http.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200, r.text


async def test_lone_surrogates_and_ollama_temperature_are_400s(
        mesh: tuple[peerllm.Node, peerllm.Node, httpx.AsyncClient]) -> None:
    server, front, http = mesh
    body = json.dumps(chat()).replace('"hi"', '"hi \\ud800"')
    for _ in range(4):
        r = await http.post("/v1/chat/completions", content=body,
                            headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        r = await http.post("/api/chat", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "options": {"temperature": 9, "num_predict": 2}})
        assert r.status_code == 400, r.text
        assert "temperature" in r.json()["error"]
    assert breaker(front, server).startswith("closed")


async def test_many_concurrent_requests_never_open_the_busy_peers_breaker(
        mesh: tuple[peerllm.Node, peerllm.Node, httpx.AsyncClient]) -> None:
    server, front, http = mesh
    statuses: list[int] = []
    retry_after: list[str] = []

    async def one() -> None:
        r = await http.post("/v1/chat/completions", json=chat(max_tokens=4))
        statuses.append(r.status_code)
        if r.status_code == 503:
            retry_after.append(r.headers["retry-after"])

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(one)
    # The ones server refused (too many streams) waited out its Retry-After and ran.
    assert statuses == [200] * 12, (statuses, retry_after)
    assert breaker(front, server).startswith("closed")
    r = await http.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200, r.text
