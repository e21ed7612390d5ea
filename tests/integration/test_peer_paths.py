"""Per peer, how it is reached — ``direct`` or ``relayed via <relay>`` — as real nodes
see it (/v1/peers rows, ``peerllm peers``): C (pinned private) reserves on relay R, A
reaches C only through R."""

from __future__ import annotations

from typing import Any

import trio
from click.testing import CliRunner

import peerllm
from peerllm.api import open_api
from peerllm.cli import cli
from peerllm.node import Node
from peerllm.p2p.registry import Source
from tests.helpers import MakeConfig, wait_until


def row_of(node: Node, peer_id: str) -> dict[str, Any]:
    return next(p for p in node.peers() if p["peer_id"] == peer_id)


async def test_a_peer_reached_through_a_relay_is_shown_relayed_via_the_relays_name(
        make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("r", dht=False, relay_service="on")) as r, \
            peerllm.open_node(make_config(
                "c", dht=False, reachability="private", bootstrap=[r.addrs()[0]],
                relays=[r.addrs()[0]])) as c:
        await wait_until(lambda: bool(c.relays and c.relays.held), what="C's reservation")
        async with peerllm.open_node(make_config("a", dht=False,
                                                 bootstrap=[r.addrs()[0]])) as a, \
                open_api(a) as url:
            circuit = f"{r.addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"
            assert await a.membership.connect_peer(c.peer_id, [circuit], Source.DHT)
            await wait_until(lambda: row_of(a, r.peer_id)["state"] == "healthy",
                             what="A to know R's name")
            far = row_of(a, c.peer_id)
            assert (far["kind"], far["connected"], far["relay"], far["path"]) == (
                "peerllm", True, r.peer_id, "relayed via r")
            assert row_of(a, r.peer_id)["path"] == "direct"
            await wait_until(lambda: any(p["peer_id"] == a.peer_id and p["connected"]
                                         for p in c.peers()), what="C to list A")
            assert row_of(c, a.peer_id)["path"] == "relayed via r"  # C sees A arrive via R
            result = await trio.to_thread.run_sync(
                lambda: CliRunner().invoke(cli, ["peers", "--api", url]))
            assert result.exit_code == 0, result.output
            line = next(ln for ln in result.output.splitlines() if c.peer_id[-8:] in ln)
            assert "relayed via r" in line and "peerllm" in line
