"""Ollama's keep_alive over HTTP: 0 unloads after the request, a duration shows in
/api/ps, and setting it takes the operator role. One node on FakeBackend."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import peerllm
from peerllm.api import open_api
from peerllm.auth import Role
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def api(make_config: MakeConfig) -> AsyncIterator[tuple[peerllm.Node, httpx.AsyncClient]]:
    cfg = with_fake_model(make_config("a", dht=False))
    async with peerllm.open_node(cfg, backend=FakeBackend()) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
        yield node, http


def state(node: peerllm.Node) -> str:
    return next(m.state for m in node.model_statuses() if m.id == FAKE_MODEL)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": FAKE_MODEL, "messages": HELLO, "stream": False,
            "options": {"num_predict": 2}, **extra}


async def expires_in(http: httpx.AsyncClient) -> timedelta:
    r = await http.get("/api/ps")
    assert r.status_code == 200
    (model,) = r.json()["models"]
    at = datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00"))
    return at - datetime.now(UTC)


async def test_keep_alive_zero_unloads_after_the_request(
        api: tuple[peerllm.Node, httpx.AsyncClient]) -> None:
    node, http = api
    r = await http.post("/api/chat", json=chat(keep_alive=0))
    assert r.status_code == 200 and r.json()["done"] is True
    await wait_until(lambda: state(node) == "available", what="the model unloaded")
    assert (await http.get("/api/ps")).json()["models"] == []


async def test_a_duration_shows_in_ps_and_forever_is_far_away(
        api: tuple[peerllm.Node, httpx.AsyncClient]) -> None:
    _, http = api
    assert (await http.post("/api/generate", json={
        "model": FAKE_MODEL, "prompt": "hi", "keep_alive": "5m", "stream": False,
        "options": {"num_predict": 2}})).status_code == 200
    left = await expires_in(http)
    assert timedelta(0) < left <= timedelta(minutes=5)
    assert (await http.post("/api/chat", json=chat(keep_alive=-1))).status_code == 200
    assert await expires_in(http) > timedelta(days=300)


async def test_generate_with_an_empty_prompt_and_keep_alive_zero_unloads(
        api: tuple[peerllm.Node, httpx.AsyncClient]) -> None:
    node, http = api
    r = await http.post("/api/generate", json={"model": FAKE_MODEL})
    assert r.json()["done_reason"] == "load" and state(node) == "loaded"
    r = await http.post("/api/generate", json={"model": FAKE_MODEL, "keep_alive": "0s"})
    assert r.status_code == 200 and r.json()["done_reason"] == "unload"
    assert state(node) == "available"


async def test_bad_keep_alive_is_a_400_naming_it(
        api: tuple[peerllm.Node, httpx.AsyncClient]) -> None:
    _, http = api
    for bad in ("5 minutes", True, [1]):
        r = await http.post("/api/chat", json=chat(keep_alive=bad))
        assert r.status_code == 400 and r.json()["error"].startswith("keep_alive: "), r.text


async def test_keep_alive_needs_the_operator_role(
        api: tuple[peerllm.Node, httpx.AsyncClient]) -> None:
    node, http = api
    token, _ = node.authority.create_token(subject="alice", roles=[Role.USER], ttl_s=3600,
                                           now=int(time.time()))
    auth = {"authorization": f"Bearer {token}"}
    assert (await http.post("/api/chat", json=chat(), headers=auth)).status_code == 200
    r = await http.post("/api/chat", json=chat(keep_alive=0), headers=auth)
    assert r.status_code == 403 and "operator" in r.json()["error"]
    r = await http.post("/api/generate", json={"model": FAKE_MODEL, "keep_alive": 0},
                        headers=auth)
    assert r.status_code == 403
    assert state(node) == "loaded"
