"""Embeddings through the mesh with real nodes: B serves nothing and answers the OpenAI,
Ollama and legacy Ollama embedding routes with A's vectors over /peerllm/embed; a token
B forwards is checked and charged by A, which signs a receipt; a dead replica fails over.

A (and A2) serve FAKE_MODEL on FakeBackend, whose vectors are ``fake_vector(text)``.
"""

from __future__ import annotations

import base64
import struct
import time
from pathlib import Path

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from peerllm.auth import Principal, Role
from peerllm.auth.receipts import read_receipt
from peerllm.config import NodeConfig
from peerllm.errors import InferenceRejected, NoRoute
from peerllm.node import Node
from peerllm.testing import FakeBackend, fake_vector
from peerllm.wire import embed as we
from tests.helpers import (
    FAKE_MODEL,
    MakeConfig,
    audit_lines,
    issuer_of,
    wait_until,
    with_fake_model,
)

TEXTS = ["the cat sat", "on the mat", ""]
TOKENS = sum(len(t.split()) + 1 for t in TEXTS)  # the fake model's count


async def sees(front: Node, *servers: Node) -> None:
    def seen() -> bool:
        ids = {c.peer_id for c in front.router.candidates(FAKE_MODEL)[0]}
        return all(s.peer_id in ids for s in servers)
    await wait_until(seen, timeout_s=30, what=f"{front.name} to see {FAKE_MODEL}")


def token_of(node: Node, subject: str = "alice") -> Principal:
    token, _ = node.authority.create_token(subject=subject, roles=[Role.USER], ttl_s=3600,
                                           now=int(time.time()))
    return node.authority.authenticate(f"Bearer {token}", now=time.time())


async def test_b_answers_every_embedding_route_with_a_s_vectors(make_config: MakeConfig
                                                                ) -> None:
    a_cfg = with_fake_model(make_config("a", dht=False))
    async with peerllm.open_node(a_cfg, backend=FakeBackend()) as a:
        b_cfg = make_config("b", dht=False, bootstrap=[a.addrs()[0]])
        await check_every_route(a, a_cfg, b_cfg)


async def check_every_route(a: Node, a_cfg: NodeConfig, b_cfg: NodeConfig) -> None:
    async with peerllm.open_node(b_cfg) as b, open_api(a) as a_url, open_api(b) as b_url, \
            httpx.AsyncClient(base_url=b_url, trust_env=False) as http, \
            httpx.AsyncClient(base_url=a_url, trust_env=False) as direct:
        await sees(b, a)
        entry = b.registry.get(a.peer_id)
        assert entry is not None and entry.info is not None
        assert we.PROTOCOL_ID in entry.info.capabilities.protocols
        expected = [fake_vector(t) for t in TEXTS]
        body = {"model": FAKE_MODEL, "input": TEXTS}
        r = await http.post("/v1/embeddings", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert [d["embedding"] for d in doc["data"]] == expected
        assert [d["index"] for d in doc["data"]] == [0, 1, 2]
        assert doc["usage"] == {"prompt_tokens": TOKENS, "total_tokens": TOKENS}
        assert r.headers["x-peerllm-served-by"] == a.peer_id
        # Asking A directly gives the same answer, served by A itself.
        mine = await direct.post("/v1/embeddings", json=body)
        assert mine.json()["data"] == doc["data"] and mine.json()["usage"] == doc["usage"]
        b64 = await http.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
        raw = base64.b64decode(b64.json()["data"][1]["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == expected[1]
        one = await http.post("/v1/embeddings", json={"model": FAKE_MODEL, "input": "hi"})
        assert [d["embedding"] for d in one.json()["data"]] == [fake_vector("hi")]
        # Ollama's /api/embed, and the legacy /api/embeddings (one prompt, one vector).
        olla = await http.post("/api/embed", json=body)
        assert olla.status_code == 200, olla.text
        assert olla.json()["embeddings"] == expected
        assert olla.json()["prompt_eval_count"] == TOKENS
        legacy = await http.post("/api/embeddings", json={"model": FAKE_MODEL,
                                                          "prompt": "the cat sat"})
        assert legacy.status_code == 200, legacy.text
        assert legacy.json() == {"embedding": expected[0]}
        bad = await http.post("/api/embeddings", json={"model": FAKE_MODEL, "input": "x"})
        assert bad.status_code == 400 and "prompt" in bad.json()["error"]
        # Every request B placed went to A and counts there as served (anonymous).
        kinds = [(u.kind, u.tokens_in, u.tokens_out) for u in a.usage.recent()]
        assert ("served", TOKENS, 0) in kinds and ("local", TOKENS, 0) in kinds
        assert {u.kind for u in b.usage.recent()} == {"forwarded"}
        assert all(u.verified for u in b.usage.recent())
        unknown = await http.post("/v1/embeddings", json={"model": "nope", "input": "x"})
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["error"]["message"]
    # Audit: B's lines name A as the server; A's name B as the peer that asked.
    assert b_cfg.data_dir is not None and a_cfg.data_dir is not None
    b_lines = {(x["kind"], x["served_by"], x["outcome"], x["forwarded_by"])
               for x in audit_lines(b_cfg.data_dir, "inference")}
    assert b_lines == {("embedding", a.peer_id, "ok", None),
                       ("embedding", None, "invalid_value", None),  # no prompt
                       ("embedding", None, "model_not_found", None)}
    a_lines = [x for x in audit_lines(a_cfg.data_dir, "inference")
               if x["forwarded_by"] == b.peer_id]
    assert a_lines and all((x["kind"], x["served_by"], x["outcome"]) ==
                           ("embedding", a.peer_id, "ok") for x in a_lines)
    assert {x["tokens_in"] for x in a_lines} >= {TOKENS}


async def test_a_forwarded_token_is_checked_charged_and_receipted_by_a(
        make_config: MakeConfig, tmp_path: Path) -> None:
    a_cfg = with_fake_model(make_config("a", dht=False),
                            auth={"required": True,
                                  "trusted_issuers": [issuer_of(tmp_path / "b")]})
    async with peerllm.open_node(a_cfg, backend=FakeBackend()) as a, \
            peerllm.open_node(make_config("b", dht=False, bootstrap=[a.addrs()[0]])) as b:
        await sees(b, a)
        alice = token_of(b)
        placed = await b.embed(FAKE_MODEL, TEXTS, principal=alice)
        assert (placed.served_by, placed.local, placed.vectors) == \
            (a.peer_id, False, [fake_vector(t) for t in TEXTS])
        served = a.usage.recent()[-1]
        assert (served.kind, served.subject, served.peer, served.tokens_in,
                served.tokens_out) == ("served", "alice", b.peer_id, TOKENS, 0)
        forwarded = b.usage.recent()[-1]
        assert (forwarded.kind, forwarded.subject, forwarded.verified) == \
            ("forwarded", "alice", True)
        assert forwarded.receipt is not None and forwarded.receipt == served.receipt
        receipt = read_receipt(forwarded.receipt, server=a.peer_id, client=b.peer_id)
        assert (receipt.subject, receipt.tokens_in, receipt.tokens_out) == \
            ("alice", TOKENS, 0)
        # Anonymous (no token to delegate): A refuses, and B says so rather than 503.
        for _ in range(4):  # more than the breaker's threshold: refusals never trip it
            with pytest.raises(InferenceRejected) as err:
                await b.embed(FAKE_MODEL, ["x"])
            assert (err.value.code, err.value.peer_id) == ("unauthorized", a.peer_id)
        assert b.router.breakers.describe(a.peer_id) == "closed"


async def run_replica(cfg: NodeConfig, stop: trio.Event, stopped: trio.Event, *,
                      task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
    """A FakeBackend node that runs until ``stop`` is set (the test "kills" it); sets
    ``stopped`` once it is gone."""
    try:
        async with peerllm.open_node(cfg, backend=FakeBackend()) as node:
            task_status.started(node)
            await stop.wait()
    finally:
        stopped.set()


async def test_a_killed_replica_is_skipped_then_with_none_left_a_clean_error(
        make_config: MakeConfig) -> None:
    stop1, stop2, gone1, gone2 = trio.Event(), trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        a1: Node = await nursery.start(run_replica, with_fake_model(make_config("a1", dht=False)),
                                       stop1, gone1)
        a2: Node = await nursery.start(run_replica, with_fake_model(make_config("a2", dht=False)),
                                       stop2, gone2)
        async with peerllm.open_node(make_config(
                "b", dht=False, bootstrap=[a1.addrs()[0], a2.addrs()[0]])) as b:
            await sees(b, a1, a2)
            stop1.set()  # a1 dies while b still lists it as healthy
            await gone1.wait()
            for _ in range(3):
                placed = await b.embed(FAKE_MODEL, ["x"])
                assert (placed.served_by, placed.vectors) == (a2.peer_id, [fake_vector("x")])
            stop2.set()  # and now nobody serves the model
            await gone2.wait()
            with pytest.raises((NoRoute, InferenceRejected)) as err:
                await b.embed(FAKE_MODEL, ["x"])
            assert FAKE_MODEL in str(err.value)
