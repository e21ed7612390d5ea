"""The reservation keeper between real nodes on 127.0.0.1: which relays it picks, and how
its advertised circuit addresses follow reachability and the relay's presence."""

from __future__ import annotations

import peerllm
from peerllm.p2p.reachability_state import Reachability
from peerllm.p2p.relay import RELAY_PROVIDER_REF
from tests.helpers import MakeConfig, wait_for_value, wait_until


async def test_a_bootstrap_peer_that_relays_is_used_and_follows_reachability(
        make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("r", dht=False, relay_service="auto")) as r:
        assert r.host.relay is not None and not r.host.relay.service.serving
        r.reachability.set(Reachability.PUBLIC, "dialled back by a peer")
        await wait_until(lambda: r.host.relay is not None and r.host.relay.service.serving,
                         what="R relaying once public")
        async with peerllm.open_node(make_config("c", dht=False,
                                                 bootstrap=[r.addrs()[0]])) as c:
            assert c.relays is not None and not c.relays.held  # unknown: no reservation
            c.reachability.set(Reachability.PRIVATE, "nobody could dial us back")
            await wait_until(lambda: c.relays is not None and r.peer_id in c.relays.held,
                             what="C's reservation on its bootstrap peer")
            circuit = f"{r.addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"
            assert circuit in c.addrs()
            c.reachability.set(Reachability.PUBLIC, "a peer dialled us back")
            await wait_until(lambda: circuit not in c.addrs(), what="C dropping its address")
            assert not c.relays.held


async def test_addresses_are_dropped_when_the_relay_goes_away(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("c", dht=False, reachability="private")) as c:
        async with peerllm.open_node(make_config("r", dht=False, relay_service="on")) as r:
            circuit = f"{r.addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"
            assert c.relays is not None
            # What the keeper does with a --relay address, asked for at once.
            assert await c.relays.reserve(r.peer_id, [r.addrs()[0]])
            assert circuit in c.addrs()
        await wait_until(lambda: circuit not in c.addrs(), what="C dropping its address")
        assert not c.relays.held


async def test_a_relay_is_found_in_the_dht(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("hub")) as hub, \
            peerllm.open_node(make_config("r", relay_service="on",
                                          bootstrap=[hub.addrs()[0]])) as r, \
            peerllm.open_node(make_config("c", reachability="private",
                                          bootstrap=[hub.addrs()[0]])) as c:
        assert c.dht is not None and c.relays is not None
        dht = c.dht
        found = await wait_for_value(
            lambda: _providers(dht), timeout_s=40, what="a relay provider in the DHT")
        assert r.peer_id in found
        await c.relays.look()
        assert r.peer_id in c.relays.held
        assert hub.peer_id not in c.relays.held  # the hub does not relay


async def _providers(dht: object) -> list[str] | None:
    from peerllm.p2p.dht import Dht

    assert isinstance(dht, Dht)
    peers = [p for p, _ in await dht.find_providers(RELAY_PROVIDER_REF)]
    return peers or None
