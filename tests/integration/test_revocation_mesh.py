"""Revocation reaches the mesh with real nodes: revoked on A (API or a file the CLI drops),
refused on B within 10 s; after B restarts it still refuses, and catches up on what was
revoked while it was down."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import peerllm
from peerllm.auth import Authority, Principal, Role
from peerllm.config import AuthConfig, NodeConfig
from peerllm.errors import AuthError, InferenceRejected
from peerllm.inference.request import GenerationRequest, SamplingParams
from peerllm.node import Node
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, issuer_of, wait_until, with_fake_model

WITHIN_S = 10.0  # the promise (protocols/auth.md)


def refusal(node: Node, token: str) -> str | None:
    """Why ``node`` refuses ``token`` (None: it accepts it)."""
    try:
        node.authority.authenticate(f"Bearer {token}", now=time.time())
    except AuthError as exc:
        return exc.reason
    return None


def refuses(node: Node, token: str) -> bool:
    return refusal(node, token) == "revoked"


def issue(node: Node, subject: str) -> tuple[str, str]:
    token, claims = node.authority.create_token(subject=subject, roles=[Role.USER],
                                                ttl_s=3600, now=int(time.time()))
    return token, claims.id


def trusting(cfg: NodeConfig, issuer: str) -> NodeConfig:
    return dataclasses.replace(cfg, auth=AuthConfig(required=True, trusted_issuers=(issuer,)))


async def test_a_revocation_on_a_reaches_b_and_survives_b_restarting(
        make_config: MakeConfig, tmp_path: Path) -> None:
    a_issuer = issuer_of(tmp_path / "a")
    async with peerllm.open_node(make_config("a", dht=False)) as a:
        b_cfg = trusting(make_config("b", dht=False, bootstrap=[a.addrs()[0]]), a_issuer)
        first, first_id = issue(a, "alice")
        by_file, by_file_id = issue(a, "bob")
        while_down, while_down_id = issue(a, "carol")
        async with peerllm.open_node(b_cfg) as b:
            await wait_until(lambda: b.host.is_connected(a.peer_id), what="b connected to a")
            assert refusal(b, first) is None  # B verifies A's tokens offline
            a.authority.revoke(first_id, now=int(time.time()))  # the admin API's call
            await wait_until(lambda: refuses(b, first), timeout_s=WITHIN_S,
                             what="b to refuse a token revoked on a")
            # `peerllm token revoke` on A's machine: another process, same data dir.
            Authority(data_dir=a.data_dir, config=a.config.auth).revoke(
                by_file_id, now=int(time.time()))
            await wait_until(lambda: refuses(b, by_file), timeout_s=WITHIN_S,
                             what="b to refuse a token whose revocation file a picked up")
            assert a.authority.revocations.is_revoked(a.authority.issuer_id, by_file_id)
        a.authority.revoke(while_down_id, now=int(time.time()))
        async with peerllm.open_node(b_cfg) as b:
            # From B's own disk, before any peer said a word.
            assert refuses(b, first) and refuses(b, by_file)
            await wait_until(lambda: refuses(b, while_down), timeout_s=WITHIN_S,
                             what="b to catch up on a revocation made while it was down")


async def test_records_of_an_issuer_b_does_not_trust_stay_off_b(
        make_config: MakeConfig, tmp_path: Path) -> None:
    async with peerllm.open_node(make_config("a", dht=False)) as a, \
            peerllm.open_node(make_config("b", dht=False, bootstrap=[a.addrs()[0]])) as b, \
            peerllm.open_node(trusting(make_config("c", dht=False, bootstrap=[b.addrs()[0]]),
                                       issuer_of(tmp_path / "a"))) as c:
        await wait_until(lambda: b.host.is_connected(a.peer_id)
                         and c.host.is_connected(b.peer_id), what="a - b - c")
        token, token_id = issue(a, "alice")
        a.authority.revoke(token_id, now=int(time.time()))
        # B does not trust A's issuer: it drops the record and relays nothing, so C (which
        # does trust A) does not hear of it through B. Records spread only among nodes
        # that honour them; C learns it when it connects to A (anti-entropy).
        await wait_until(lambda: len(a.authority.revocations) == 1, what="a's record")
        assert len(b.authority.revocations) == 0
        assert refusal(c, token) is None
        await c.host.connect(a.peer_id, a.addrs())
        await wait_until(lambda: refuses(c, token), timeout_s=WITHIN_S,
                         what="c to hear from a directly")
        assert len(b.authority.revocations) == 0


async def test_a_token_revoked_on_the_forwarding_node_is_refused_by_the_serving_node(
        make_config: MakeConfig, tmp_path: Path) -> None:
    # B issued alice's token and forwards her requests to A, which trusts B's issuer.
    a_cfg = with_fake_model(make_config("a", dht=False),
                            auth={"required": True,
                                  "trusted_issuers": [issuer_of(tmp_path / "b")]})
    async with peerllm.open_node(a_cfg, backend=FakeBackend()) as a, \
            peerllm.open_node(make_config("b", dht=False, bootstrap=[a.addrs()[0]])) as b:
        await wait_until(lambda: bool(b.router.candidates(FAKE_MODEL)[0]), timeout_s=30,
                         what="b to see a's model")
        token, token_id = issue(b, "alice")
        alice = b.authority.authenticate(f"Bearer {token}", now=time.time())
        await complete(b, alice)
        b.authority.revoke(token_id, now=int(time.time()))
        # A refuses it on its own, even from a forwarder that still asks (B's API would
        # no longer accept the token; here B forwards the principal it verified before).
        await wait_until(lambda: a.authority.revocations.is_revoked(b.authority.issuer_id,
                                                                    token_id),
                         timeout_s=WITHIN_S, what="a to hear of the revocation")
        with pytest.raises(InferenceRejected) as err:
            await complete(b, alice)
        assert err.value.code == "unauthorized"
        assert f"revoked: token {token_id} was revoked" in err.value.message


async def complete(node: Node, principal: Principal) -> None:
    req = GenerationRequest(model=FAKE_MODEL, prompt="hi", params=SamplingParams(max_tokens=2))
    async with node.open_generation(req, principal=principal) as routed:
        assert [ev async for ev in routed.events()]
