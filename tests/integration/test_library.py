"""`peerllm.open_node` embedded in a program: peers(), identity persistence, mDNS."""

from __future__ import annotations

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
