"""`peerllm.open_node` embedded in a program: peers(), identity persistence, mDNS."""

from __future__ import annotations

from typing import Any

import pytest

import peerllm
from tests.helpers import MakeConfig, healthy_names, wait_until


async def test_identity_survives_reopen(make_config: MakeConfig) -> None:
    cfg = make_config("stable")
    async with peerllm.open_node(cfg) as n:
        first = (n.peer_id, n.identity.node_id, n.name)
    async with peerllm.open_node(cfg) as n:
        assert (n.peer_id, n.identity.node_id, n.name) == first


async def test_known_peers_are_redialled(make_config: MakeConfig) -> None:
    cfg_a = make_config("anchor")
    async with peerllm.open_node(cfg_a) as a:
        cfg_b = make_config("rejoin", bootstrap=[a.addrs()[0]])
        async with peerllm.open_node(cfg_b) as b:
            await wait_until(lambda: "anchor" in healthy_names(b.peers()), what="first contact")
        # Same data dir, no bootstrap this time: the cache alone must find the anchor.
        async with peerllm.open_node(make_config("rejoin")) as b2:
            await wait_until(lambda: "anchor" in healthy_names(b2.peers()), what="redial")
            row = next(p for p in b2.peers() if p["name"] == "anchor")
            assert "cache" in row["sources"]


@pytest.mark.usefixtures("multicast")
async def test_two_nodes_find_each_other_over_mdns(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("lan-a", mdns=True, dht=False)) as a, \
            peerllm.open_node(make_config("lan-b", mdns=True, dht=False)) as b:
        await wait_until(lambda: "lan-b" in healthy_names(a.peers()), what="a sees b")
        await wait_until(lambda: "lan-a" in healthy_names(b.peers()), what="b sees a")
        # Whoever dialled first shows up as "inbound" on the other side until that side's
        # own mDNS browse also reports it.
        await wait_until(lambda: any("mdns" in p["sources"] for p in b.peers()),
                         what="b to list a with source mdns")
        await wait_until(lambda: any("mdns" in p["sources"] for p in a.peers()),
                         what="a to list b with source mdns")


async def test_errors_from_the_callers_block_come_back_as_themselves(
        make_config: MakeConfig) -> None:
    async def generate(name: str, model: str, **params: Any) -> None:
        async with peerllm.open_node(make_config(name, dht=False)) as n:
            async for _ in n.generate(model, "hi", **params):
                pass

    with pytest.raises(peerllm.NoRoute):  # not an ExceptionGroup around it
        await generate("lonely", "no-such-model", max_tokens=1)
    with pytest.raises(peerllm.InvalidField) as err:
        await generate("strict", "m", top_k=5000)
    assert err.value.field == "top_k" and isinstance(err.value, peerllm.PeerLLMError)
