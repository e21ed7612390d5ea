"""Auth across the mesh with real nodes: B forwards its callers' requests to A, which serves
them only as the delegated token allows, and answers with a receipt both sides keep.

A serves FAKE_MODEL (FakeBackend, real libp2p hosts on 127.0.0.1); B and C serve nothing,
so every request they place goes to A over /peerllm/infer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import peerllm
from peerllm import NodeClient
from peerllm.api import open_api
from peerllm.auth import Principal, Role
from peerllm.auth.delegation import make_delegation
from peerllm.auth.receipts import read_receipt
from peerllm.errors import InferenceRejected
from peerllm.events import Done, TokenChunk
from peerllm.inference.request import GenerationRequest, SamplingParams
from peerllm.mesh.serving import to_wire_request
from peerllm.node import Node
from peerllm.testing import FakeBackend
from tests.helpers import (
    FAKE_MODEL,
    MakeConfig,
    audit_lines,
    issuer_of,
    peer_of,
    wait_until,
    with_fake_model,
)

REQ = GenerationRequest(model=FAKE_MODEL, prompt="one two three",
                        params=SamplingParams(max_tokens=4, temperature=0.0))


def closed(front: Node, server: Node) -> bool:
    return front.router.breakers.describe(server.peer_id) == "closed"


async def sees_model(front: Node) -> None:
    await wait_until(lambda: bool(front.router.candidates(FAKE_MODEL)[0]), timeout_s=30,
                     what=f"{front.name} to see {FAKE_MODEL}")


async def generate(node: Node, principal: Principal | None = None
                   ) -> tuple[peerllm.Routed, str, Done]:
    text, done = "", None
    async with node.open_generation(REQ, principal=principal) as routed:
        async for ev in routed.events():
            if isinstance(ev, TokenChunk):
                text += ev.text
            else:
                done = ev
    assert done is not None
    return routed, text, done


def token_of(node: Node, subject: str = "alice", **limits: Any) -> Principal:
    """A token of ``node``'s issuer, verified by ``node`` as its HTTP API would."""
    token, _ = node.authority.create_token(subject=subject, roles=[Role.USER], ttl_s=3600,
                                           now=int(time.time()), **limits)
    return node.authority.authenticate(f"Bearer {token}", now=time.time())


@asynccontextmanager
async def mesh(make_config: MakeConfig, tmp_path: Path, *, a_auth: dict[str, Any],
               a_p2p: dict[str, Any] | None = None, extra: bool = False
               ) -> AsyncIterator[tuple[Node, Node, Node | None]]:
    """A (serving, with ``a_auth``) and B (and C if ``extra``), both bootstrapped to A."""
    a_cfg = with_fake_model(make_config("a", dht=False, **(a_p2p or {})), auth=a_auth)
    async with peerllm.open_node(a_cfg, backend=FakeBackend()) as a, \
            peerllm.open_node(make_config("b", dht=False, bootstrap=[a.addrs()[0]])) as b:
        await sees_model(b)
        if not extra:
            yield a, b, None
            return
        async with peerllm.open_node(make_config("c", dht=False,
                                                 bootstrap=[a.addrs()[0]])) as c:
            await sees_model(c)
            yield a, b, c


async def test_a_token_through_b_is_served_by_a_with_a_receipt_both_count(
        make_config: MakeConfig, tmp_path: Path) -> None:
    # B's operator issues alice's token; A requires auth and trusts B's issuer (for the
    # token and for B's node certificate).
    async with mesh(make_config, tmp_path,
                    a_auth={"required": True, "trusted_issuers": [issuer_of(tmp_path / "b")]}
                    ) as (a, b, _):
        alice = token_of(b)
        assert alice.claims is not None
        routed, text, done = await generate(b, alice)
        assert (routed.served_by, routed.local) == (a.peer_id, False)
        assert text == "t0 t1 t2 t3 "
        # A's own view: the principal it served is alice's token, via B.
        served = a.usage.recent()[-1]
        assert (served.kind, served.subject, served.token_id, served.peer, served.model) \
            == ("served", "alice", alice.claims.id, b.peer_id, FAKE_MODEL)
        assert (served.tokens_in, served.tokens_out) == (done.prompt_tokens, 4)
        # The receipt A signed is the one B got, and it verifies against A's peer ID.
        assert done.receipt is not None and served.receipt == done.receipt
        r = read_receipt(done.receipt, server=a.peer_id, client=b.peer_id)
        assert (r.subject, r.token_id, r.model, r.tokens_in, r.tokens_out) == (
            "alice", alice.claims.id, FAKE_MODEL, done.prompt_tokens, done.completion_tokens)
        assert r.gen_s == pytest.approx(done.total_ms / 1000, abs=1e-3)
        forwarded = b.usage.recent()[-1]
        assert (forwarded.kind, forwarded.subject, forwarded.token_id, forwarded.peer,
                forwarded.verified, forwarded.receipt, forwarded.request_id) == (
            "forwarded", "alice", alice.claims.id, a.peer_id, True, done.receipt,
            r.request_id)
        row = {"subject": "alice", "requests": 1, "tokens_in": done.prompt_tokens,
               "tokens_out": 4}
        for node in (a, b):
            assert {k: node.usage.rows("subject")[0][k] for k in row} == row
            assert node.usage.rows("model")[0]["model"] == FAKE_MODEL
        assert [(p["peer"], p["relation"]) for p in a.usage.rows("peer")] == \
            [(b.peer_id, "forwarded_by")]
        assert [(p["peer"], p["relation"]) for p in b.usage.rows("peer")] == \
            [(a.peer_id, "served_by")]
        assert closed(b, a)
        # What the operator sees on B, through the API and the client the CLI uses.
        async with open_api(b) as url, NodeClient(url) as client, \
                httpx.AsyncClient(base_url=url, trust_env=False) as http:
            doc = await client.usage("subject")
            assert doc["node"] == {"peer_id": b.peer_id, "name": "b"}
            assert {k: doc["rows"][0][k] for k in row} == row
            assert doc["total"]["requests"] == 1
            by_peer = (await http.get("/v1/usage", params={"by": "peer"})).json()
            assert [(r["peer"], r["relation"], r["requests"]) for r in by_peer["rows"]] == \
                [(a.peer_id, "served_by", 1)]
            bad = await http.get("/v1/usage", params={"by": "colour"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"


async def test_a_counts_the_rate_of_a_forwarded_token_itself(make_config: MakeConfig,
                                                             tmp_path: Path) -> None:
    async with mesh(make_config, tmp_path,
                    a_auth={"required": True, "trusted_issuers": [issuer_of(tmp_path / "b")]}
                    ) as (a, b, _):
        once_a_minute = token_of(b, requests_per_min=1)
        await generate(b, once_a_minute)
        with pytest.raises(InferenceRejected) as err:
            await generate(b, once_a_minute)
        assert (err.value.code, err.value.retryable) == ("rate_limited", True)
        assert f"peer {a.peer_id}: rate_limited: over 1 requests per minute" \
            == err.value.message
        assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
        assert closed(b, a)
        await generate(b, token_of(b, subject="bob"))  # another token has its own rate


async def test_an_anonymous_caller_forwarded_to_an_auth_required_node_is_unauthorized(
        make_config: MakeConfig, tmp_path: Path) -> None:
    async with mesh(make_config, tmp_path,
                    a_auth={"required": True, "trusted_issuers": [issuer_of(tmp_path / "b")]}
                    ) as (a, b, _):
        for _ in range(4):  # more than the breaker's threshold
            with pytest.raises(InferenceRejected) as err:
                await generate(b)
            assert (err.value.code, err.value.retryable, err.value.peer_id) == \
                ("unauthorized", False, a.peer_id)
            assert f"peer {a.peer_id}: missing: the forwarded request carries no token" \
                in err.value.message
        assert closed(b, a)
        assert a.usage.recent() == []
        await generate(b, token_of(b))  # with a token A trusts, the same request is served


async def test_a_delegation_is_good_only_for_its_audience_and_its_signer(
        make_config: MakeConfig, tmp_path: Path) -> None:
    async with mesh(make_config, tmp_path, a_auth={}, extra=True) as (a, b, c):
        assert c is not None
        alice = token_of(b)
        for_c = b.credentials.delegation(alice, audience=c.peer_id, now=time.time())
        # B replays to A what it made for C (or A hands on what B sent it, to a third node).
        with pytest.raises(InferenceRejected) as err:
            await send(b, a, for_c)
        assert err.value.code == "unauthorized"
        assert "bad_delegation: the delegation is for another audience" in err.value.message
        # C's genuine delegation, sent over B's connection.
        by_c = c.credentials.delegation(alice, audience=a.peer_id, now=time.time())
        with pytest.raises(InferenceRejected) as err:
            await send(b, a, by_c)
        assert "signature does not verify" in err.value.message
        # A key that is not B's, claiming to be B.
        forged = make_delegation(Ed25519PrivateKey.generate(), forwarder=b.peer_id,
                                 audience=a.peer_id, subject="alice", token=alice.claims,
                                 cert=None, now=int(time.time()))
        with pytest.raises(InferenceRejected) as err:
            await send(b, a, forged)
        assert "signature does not verify" in err.value.message
        # The real thing works once, and only once.
        good = b.credentials.delegation(alice, audience=a.peer_id, now=time.time())
        assert isinstance((await send(b, a, good))[-1], Done)
        with pytest.raises(InferenceRejected) as err:
            await send(b, a, good)
        assert "replay" in err.value.message
        assert closed(b, a)


async def send(front: Node, server: Node, delegation: str) -> list[TokenChunk | Done]:
    """One infer request from ``front`` to ``server`` carrying ``delegation`` as is."""
    wire = to_wire_request(REQ, request_id=front.router.transport.next_request_id(),
                           deadline_s=30.0, session=None, auth=delegation)
    async with front.router.transport.request(server.peer_id, wire) as remote:
        return [ev async for ev in remote.events()]


async def test_serve_peers_trusted_refuses_unvouched_peers_and_serves_listed_ones(
        make_config: MakeConfig, tmp_path: Path) -> None:
    # A trusts no other issuer, but lists C's peer ID; auth is not required.
    async with mesh(make_config, tmp_path, a_auth={},
                    a_p2p={"serve_peers": "trusted", "trusted_peers": [peer_of(tmp_path / "c")]},
                    extra=True) as (a, b, c):
        assert c is not None
        with pytest.raises(InferenceRejected) as err:
            await generate(b, token_of(b))
        assert (err.value.code, err.value.retryable) == ("forbidden", False)
        assert f"peer {a.peer_id}: untrusted_peer: " in err.value.message
        assert b.peer_id in err.value.message
        assert closed(b, a)
        routed, _, done = await generate(c)
        assert routed.served_by == a.peer_id and done.receipt is not None
        served = a.usage.recent()[-1]
        assert (served.subject, served.peer) == ("anonymous", c.peer_id)


async def test_serve_peers_trusted_serves_peers_a_trusted_issuer_vouches_for(
        make_config: MakeConfig, tmp_path: Path) -> None:
    async with mesh(make_config, tmp_path,
                    a_auth={"trusted_issuers": [issuer_of(tmp_path / "b")]},
                    a_p2p={"serve_peers": "trusted"}) as (a, b, _):
        routed, _, _ = await generate(b)  # B's node certificate vouched for it
        assert routed.served_by == a.peer_id
        assert a.usage.recent()[-1].peer == b.peer_id


async def test_a_token_on_the_front_nodes_api_is_honoured_by_the_serving_node(
        make_config: MakeConfig, tmp_path: Path) -> None:
    """Through HTTP: B's caller holds a token of B's issuer; A requires auth and trusts
    B's issuer, so it serves the forwarded request as that subject, via B."""
    b_issuer = issuer_of(tmp_path / "b")
    async with mesh(make_config, tmp_path,
                    a_auth={"required": True, "trusted_issuers": [b_issuer]}) as (a, b, _), \
            open_api(b) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        token, claims = b.authority.create_token(subject="carol", roles=[Role.USER],
                                                 ttl_s=600, now=int(time.time()))
        resp = await http.post("/v1/chat/completions", json={
            "model": FAKE_MODEL, "max_tokens": 3,
            "messages": [{"role": "user", "content": "hello there"}]},
            headers={"authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-peerllm-served-by"] == a.peer_id
        # A counted it for carol, forwarded by B (its own ledger, from the delegation).
        rows = {r["subject"]: r for r in a.usage.rows("subject")}
        assert rows["carol"]["requests"] == 1
        lines = [x for x in audit_lines(a.data_dir, "inference") if x["subject"] == "carol"]
        assert len(lines) == 1 and lines[0]["forwarded_by"] == b.peer_id
        assert token not in (a.data_dir / "audit.log").read_text()
        assert lines[0]["tokens_out"] == resp.json()["usage"]["completion_tokens"]
        # B kept A's signed receipt of it under the same subject.
        front = {r["subject"]: r for r in b.usage.rows("subject")}
        assert front["carol"]["requests"] == 1 and claims.subject == "carol"
        assert closed(b, a)
