"""Circuit relay v2 between real nodes on 127.0.0.1: C (pinned private) reserves on relay
R, A reaches C only through R, and node-info and inference work over that circuit.

Hole punching is off in these tests: on one machine DCUtR's first step (a plain direct
dial) always succeeds and would move the traffic off the circuit under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import peerllm
from peerllm.errors import RelayRefused
from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams
from peerllm.node import Node
from peerllm.p2p.host import relay_of
from peerllm.p2p.registry import PeerState, Source
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model


def transport_addrs(node: Node, peer_id: str) -> list[str]:
    from libp2p.peer.id import ID

    conns = node.host.libp2p.get_network().connections.get(ID.from_base58(peer_id)) or []
    return [str(a) for c in conns for a in c.get_transport_addresses()]


@asynccontextmanager
async def relay_and_private(make_config: MakeConfig, *, r_p2p: dict[str, Any] | None = None,
                            c_p2p: dict[str, Any] | None = None
                            ) -> AsyncIterator[tuple[Node, Node]]:
    """R relays for anyone; C, serving FAKE_MODEL and pinned private, reserves on R."""
    async with peerllm.open_node(make_config(
            "r", dht=False, hole_punch=False, relay_service="on", **(r_p2p or {}))) as r:
        c_cfg = with_fake_model(make_config(
            "c", dht=False, hole_punch=False, reachability="private",
            bootstrap=[r.addrs()[0]], relays=[r.addrs()[0]], **(c_p2p or {})))
        async with peerllm.open_node(c_cfg, backend=FakeBackend()) as c:
            await wait_until(lambda: bool(c.relays and c.relays.held), what="C's reservation")
            yield r, c


async def test_a_reaches_private_c_through_relay_for_node_info_and_chat(
        make_config: MakeConfig) -> None:
    async with relay_and_private(make_config) as (r, c), \
            peerllm.open_node(make_config("a", dht=False, hole_punch=False,
                                          bootstrap=[r.addrs()[0]])) as a:
        # C advertises where it can be reached through R, in node-info's addrs too.
        circuit = f"{r.addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"
        assert circuit in c.addrs()
        assert circuit in c.node_info().addrs
        # A knows only that address (no DHT, C never dialled A).
        assert await a.membership.connect_peer(c.peer_id, [circuit], Source.DHT)
        assert all("/p2p-circuit" in t for t in transport_addrs(a, c.peer_id))
        assert {relay_of(t) for t in transport_addrs(a, c.peer_id)} == {r.peer_id}
        # ...and C sees A arrive through R, not from itself (py-libp2p's own label).
        assert {relay_of(t) for t in transport_addrs(c, a.peer_id)} == {r.peer_id}
        entry = a.registry.get(c.peer_id)
        assert entry is not None and entry.state is PeerState.HEALTHY
        assert entry.info is not None and FAKE_MODEL in {m.id for m in entry.info.models}
        req = GenerationRequest(model=FAKE_MODEL, params=SamplingParams(max_tokens=4),
                                messages=(ChatMessage(role="user", content="hi"),))
        async with a.open_generation(req) as routed:
            text = "".join([ev.text async for ev in routed.events() if hasattr(ev, "text")])
        assert (routed.served_by, text) == (c.peer_id, "t0 t1 t2 t3 ")


async def test_reservation_is_renewed_before_it_lapses(make_config: MakeConfig) -> None:
    async with relay_and_private(make_config, r_p2p={"relay_reservation_ttl_s": 2.0}) as (r, c):
        assert c.relays is not None
        first = c.relays.held[r.peer_id].reservation.expires_at
        await wait_until(lambda: c.relays is not None and r.peer_id in c.relays.held
                         and c.relays.held[r.peer_id].reservation.expires_at > first,
                         timeout_s=10, what="a renewed reservation")
        assert c.relays.held[r.peer_id].addrs[0] in c.addrs()
        assert r.host.relay is not None and r.host.relay.service.reservations() == 1
        # GET /v1/node/status shows both sides.
        mine = c.status()["relay"]["reservations"]
        assert [x["relay"] for x in mine] == [r.peer_id]
        assert c.status()["reachability"]["status"] == "private"
        assert r.status()["relay"]["service"] == {"serving": True, "reservations": 1,
                                                  "circuits": 0, "refused": 0}


async def test_a_full_relay_refuses_a_second_reservation_naming_the_status(
        make_config: MakeConfig) -> None:
    async with relay_and_private(make_config, r_p2p={"relay_max_reservations": 1}) as (r, _c), \
            peerllm.open_node(make_config("d", dht=False, hole_punch=False,
                                          bootstrap=[r.addrs()[0]])) as d:
        assert d.host.relay is not None
        await d.host.connect(r.peer_id, [r.addrs()[0]])
        with pytest.raises(RelayRefused, match="RESOURCE_LIMIT_EXCEEDED"):
            with trio.fail_after(10):
                await d.host.relay.reserve(r.peer_id)
        assert r.host.relay is not None and r.host.relay.service.refused == 1


async def test_no_reservation_means_the_relay_refuses_the_circuit(
        make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("r", dht=False, hole_punch=False,
                                             relay_service="on")) as r, \
            peerllm.open_node(make_config("b", dht=False, hole_punch=False)) as b, \
            peerllm.open_node(make_config("a", dht=False, hole_punch=False)) as a:
        circuit = f"{r.addrs()[0]}/p2p-circuit/p2p/{b.peer_id}"
        with pytest.raises(RelayRefused, match="NO_RESERVATION"):
            await a.host.connect(b.peer_id, [circuit])
        assert not a.host.is_connected(b.peer_id)


async def test_relayed_connections_get_the_private_networks_pnet_wrapping(
        make_config: MakeConfig) -> None:
    # Both ends wrap the relayed stream in pnet (py-libp2p alone wraps only the accepting
    # side, so this connection would not come up).
    key = "5a" * 32
    async with relay_and_private(make_config, r_p2p={"network_key": key},
                                 c_p2p={"network_key": key}) as (r, c), \
            peerllm.open_node(make_config("a", dht=False, hole_punch=False, network_key=key)) as a:
        assert r.host.network_key.key is not None
        circuit = f"{r.addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"
        assert await a.membership.connect_peer(c.peer_id, [circuit], Source.DHT)
        assert {relay_of(t) for t in transport_addrs(a, c.peer_id)} == {r.peer_id}
