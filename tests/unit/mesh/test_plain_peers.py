"""Membership with plain libp2p peers (mesh/plain_peers.py) and failing bootstrap
addresses, over fake links on autojump_clock: a peer without node-info is kept as
PeerState.LIBP2P, never disconnected or redialled, asked node-info at most once; a
bootstrap address that fails is listed and redialled by its own loop only, with backoff."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import trio

from peerllm.config import NodeConfig
from peerllm.errors import NetworkKeyMismatch, PeerUnavailable
from peerllm.mesh.membership import Membership
from peerllm.mesh.plain_peers import PlainPeers
from peerllm.p2p.dht import DHT_PROTOCOL_ID
from peerllm.p2p.host import ConnectionEvent
from peerllm.p2p.identify import PeerIdentity
from peerllm.p2p.known_peers import KnownPeers
from peerllm.p2p.registry import PeerRegistry, PeerState, Source
from peerllm.scheduling.membership import MISMATCH_REDIAL_S, next_bootstrap_delay
from peerllm.testing import make_identity, make_node_info
from peerllm.wire import nodeinfo as wni

from .fakes import FakeIdentifier

PLAIN = make_identity(name="plain").peer_id
DEAD = make_identity(name="dead").peer_id
NODE = make_identity(name="node").peer_id
IDENT = PeerIdentity(agent="js-libp2p/3.0.2", protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"))
HEARTBEATS = 10


def addr(peer_id: str, port: int = 4001) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}"


class Links:
    """P2PHost as membership sees it: dials succeed for ``up`` peers (and say so on
    ``events``, as the host's notifee does); every dial's time is kept."""

    def __init__(self, up: set[str]) -> None:
        self.up = up
        self.connected: set[str] = set()
        self.dials: dict[str, list[float]] = {}
        self.disconnected: list[str] = []
        self._send, self.events = trio.open_memory_channel[ConnectionEvent](64)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected

    async def connect(self, peer_id: str, addrs: Sequence[str] = ()) -> None:
        if peer_id in self.connected:
            return
        self.dials.setdefault(peer_id, []).append(trio.current_time())
        if peer_id not in self.up:
            raise PeerUnavailable(peer_id, "dial failed: OSError: connection refused")
        self.connected.add(peer_id)
        self._send.send_nowait(ConnectionEvent("connected", peer_id, False, addr(peer_id)))

    async def connect_addr(self, address: str) -> str:
        peer_id = address.rpartition("/p2p/")[2]
        await self.connect(peer_id, [address])
        return peer_id

    async def disconnect(self, peer_id: str) -> None:
        self.disconnected.append(peer_id)
        self.connected.discard(peer_id)


class InfoClient:
    """Node-info as a plain peer answers it (py-libp2p: the stream fails on "na")."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def fetch(self, peer_id: str) -> tuple[wni.NodeInfo, float]:
        self.asked.append(peer_id)
        if peer_id == PLAIN:
            raise PeerUnavailable(peer_id, "cannot open /peerllm/node-info/1.0.0: "
                                           "StreamFailure: protocols not supported")
        return make_node_info(peer_id), 1.0

    async def aclose(self) -> None:
        pass


class Dht:
    def __init__(self) -> None:
        self.added: list[str] = []

    async def add_peer(self, peer_id: str) -> None:
        self.added.append(peer_id)

    def routing_peers(self) -> list[str]:
        return []

    async def refresh(self) -> None:
        pass


def membership(links: Links, identifier: FakeIdentifier, *, bootstrap: tuple[str, ...] = (),
               dht: Dht | None = None) -> tuple[Membership, PeerRegistry, InfoClient]:
    cfg = NodeConfig()
    registry = PeerRegistry("self", stale_after_s=1e9, max_peers=64)
    info = InfoClient()
    m = Membership(
        local=cast(Any, SimpleNamespace(name="self", peer_id="self")), host=cast(Any, links),
        dht=cast(Any, dht), registry=registry, info_client=cast(Any, info),
        known_peers=KnownPeers(Path("/nonexistent/known_peers.json"), limit=8),
        p2p=dataclasses.replace(cfg.p2p, bootstrap=bootstrap),
        discovery=dataclasses.replace(cfg.discovery, mdns=False),
        on_peer_down=lambda peer: None, identifier=identifier)
    return m, registry, info


async def test_a_plain_bootstrap_peer_is_kept_and_a_dead_one_listed_and_backed_off(
        autojump_clock: trio.abc.Clock) -> None:
    links = Links(up={PLAIN})
    m, registry, info = membership(links, FakeIdentifier({PLAIN: IDENT}),
                                   bootstrap=(addr(PLAIN), addr(DEAD, 4002)))
    beat = m._p2p.heartbeat_interval_s
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run)
        await trio.sleep(beat * 1.5)
        asked_early = len(info.asked)
        await trio.sleep(beat * HEARTBEATS)
        nursery.cancel_scope.cancel()
    plain = registry.get(PLAIN)
    assert plain is not None
    assert (plain.state, plain.agent, plain.protocols, plain.connected, plain.sources) == (
        PeerState.LIBP2P, IDENT.agent, IDENT.protocols, True, {Source.BOOTSTRAP})
    assert 1 <= asked_early == len(info.asked)  # node-info asked at first only
    assert (links.dials[PLAIN], links.disconnected) == ([0.0], [])
    dead = registry.get(DEAD)
    assert dead is not None
    assert (dead.state, dead.sources, dead.addrs) == (
        PeerState.UNREACHABLE, {Source.BOOTSTRAP}, [addr(DEAD, 4002)])
    assert dead.reason == ("bootstrap dial failed: dial failed: OSError: connection refused")
    # Only its bootstrap loop redials it, backing off (the heartbeat leaves it alone).
    times = links.dials[DEAD]
    backoff: list[float] = []
    for _ in times[1:]:
        backoff.append(next_bootstrap_delay(backoff[-1] if backoff else None))
    assert len(times) >= 4
    assert [b - a for a, b in itertools.pairwise(times)] == backoff
    assert dead.consecutive_failures == len(times)


async def test_a_plain_peer_the_hosts_identify_already_knew_is_never_asked_node_info(
        autojump_clock: trio.abc.Clock) -> None:
    links = Links(up={PLAIN})
    identifier = FakeIdentifier({PLAIN: IDENT})
    identifier.cached.add(PLAIN)
    dht = Dht()
    m, registry, info = membership(links, identifier, dht=dht)
    assert not await m.connect_peer(PLAIN, [addr(PLAIN)], Source.DHT)
    for _ in range(HEARTBEATS):
        await m.refresh_peer(PLAIN)
    entry = registry.get(PLAIN)
    assert entry is not None and entry.state is PeerState.LIBP2P
    assert (info.asked, identifier.asked) == ([], [PLAIN])  # one identify, for the agent
    assert dht.added == []  # no Kademlia in its identify: it stays out of the DHT table


async def test_a_plain_peer_whose_agent_the_host_kept_needs_no_stream_of_ours(
        autojump_clock: trio.abc.Clock) -> None:
    links = Links(up={PLAIN})
    identifier = FakeIdentifier({PLAIN: IDENT})
    identifier.cached.add(PLAIN)
    identifier.agents.add(PLAIN)
    m, registry, info = membership(links, identifier)
    assert not await m.connect_peer(PLAIN, [addr(PLAIN)], Source.INBOUND)
    entry = registry.get(PLAIN)
    assert entry is not None
    assert (entry.state, entry.agent, entry.protocols) == (
        PeerState.LIBP2P, IDENT.agent, IDENT.protocols)
    assert (info.asked, identifier.asked, links.disconnected) == ([], [], [])


async def test_a_plain_peer_that_resets_a_second_identify_is_still_kept(
        autojump_clock: trio.abc.Clock) -> None:
    # js-libp2p allows one inbound identify stream: ours is reset, the host's answer
    # (protocols without node-info) still says what it is.
    links = Links(up={PLAIN})
    identifier = FakeIdentifier({PLAIN: IDENT})
    identifier.refuses.add(PLAIN)
    m, registry, _ = membership(links, identifier)
    identifier.cached.add(PLAIN)  # the host's identify finished while we asked node-info
    await m.connect_peer(PLAIN, [addr(PLAIN)], Source.BOOTSTRAP)
    for _ in range(HEARTBEATS):
        await m.refresh_peer(PLAIN)
    entry = registry.get(PLAIN)
    assert entry is not None
    assert (entry.state, entry.agent) == (PeerState.LIBP2P, None)
    assert links.disconnected == []  # kept: not written off, so never dropped


async def test_a_plain_peer_that_speaks_our_kademlia_stays_a_dht_peer(
        autojump_clock: trio.abc.Clock) -> None:
    links = Links(up={PLAIN})
    kad = dataclasses.replace(IDENT, protocols=(*IDENT.protocols, DHT_PROTOCOL_ID))
    dht = Dht()
    m, registry, _ = membership(links, FakeIdentifier({PLAIN: kad}), dht=dht)
    await m.connect_peer(PLAIN, [addr(PLAIN)], Source.BOOTSTRAP)
    assert dht.added == [PLAIN]
    entry = registry.get(PLAIN)
    assert entry is not None and entry.state is PeerState.LIBP2P


async def test_a_peerllm_node_whose_node_info_fails_is_not_taken_for_a_plain_peer(
        autojump_clock: trio.abc.Clock) -> None:
    """Its identify lists node-info: a real failure, handled as before."""
    links = Links(up={PLAIN})
    says_node_info = PeerIdentity(agent="peerllm/0.1.0", protocols=(wni.PROTOCOL_ID,))
    m, registry, _ = membership(links, FakeIdentifier({PLAIN: says_node_info}))
    await m.connect_peer(PLAIN, [addr(PLAIN)], Source.BOOTSTRAP)
    entry = registry.get(PLAIN)
    assert entry is not None and entry.state is PeerState.UNREACHABLE
    assert links.disconnected == [PLAIN]


async def test_a_plain_peer_that_learns_node_info_is_asked_again(
        autojump_clock: trio.abc.Clock) -> None:
    links = Links(up={NODE})
    identifier = FakeIdentifier({NODE: IDENT})
    m, registry, info = membership(links, identifier)
    registry.saw(NODE, Source.INBOUND, now=time.time())
    registry.plain_peer(NODE, agent=IDENT.agent, protocols=IDENT.protocols, now=time.time())
    await m.refresh_peer(NODE)
    assert info.asked == []
    # Restarted as a PeerLLM node on the same key: identify (push) now lists node-info.
    identifier.plain[NODE] = PeerIdentity(agent="peerllm/0.1.0", protocols=(wni.PROTOCOL_ID,))
    identifier.cached.add(NODE)
    await m.refresh_peer(NODE)
    entry = registry.get(NODE)
    assert info.asked == [NODE]
    assert entry is not None and entry.state is PeerState.HEALTHY and entry.info is not None


class MismatchLinks(Links):
    """Every dial of ``other`` is refused as another network (``suspected`` or not)."""

    def __init__(self, other: str, *, suspected: bool) -> None:
        super().__init__(up=set())
        self.other, self.suspected = other, suspected

    async def connect(self, peer_id: str, addrs: Sequence[str] = ()) -> None:
        if peer_id != self.other:
            await super().connect(peer_id, addrs)
            return
        self.dials.setdefault(peer_id, []).append(trio.current_time())
        raise NetworkKeyMismatch(peer_id, "network key differs: it sent nothing for 1.5 s",
                                 suspected=self.suspected)


async def test_a_bootstrap_peer_of_another_network_is_dialled_again_slowly(
        autojump_clock: trio.abc.Clock) -> None:
    # The operator asked for it and may fix either key.
    links = MismatchLinks(DEAD, suspected=False)
    m, registry, _ = membership(links, FakeIdentifier(), bootstrap=(addr(DEAD),))
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run)
        await trio.sleep(MISMATCH_REDIAL_S * 3.5)
        nursery.cancel_scope.cancel()
    times = links.dials[DEAD]
    assert len(times) == 4
    assert all(b - a >= MISMATCH_REDIAL_S for a, b in itertools.pairwise(times))
    entry = registry.get(DEAD)
    assert entry is not None
    assert (entry.state, entry.reason, entry.retry_refused) == (
        PeerState.REFUSED, "network key differs", False)


async def heartbeats_after_one_refusal(links: MismatchLinks) -> PeerRegistry:
    """Meet DEAD over mDNS (refused), then run the heartbeat for a while."""
    m, registry, _ = membership(links, FakeIdentifier())
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run)
        await m.connect_peer(DEAD, [addr(DEAD)], Source.MDNS)
        # redial_due reads the wall clock, which autojump does not move: age the entry.
        entry = registry.get(DEAD)
        assert entry is not None
        entry.first_seen -= 3600
        await trio.sleep(m._p2p.heartbeat_interval_s * HEARTBEATS)
        nursery.cancel_scope.cancel()
    return registry


async def test_a_peer_refused_on_behaviour_only_is_redialled_by_the_heartbeat(
        autojump_clock: trio.abc.Clock) -> None:
    links = MismatchLinks(DEAD, suspected=True)
    registry = await heartbeats_after_one_refusal(links)
    entry = registry.get(DEAD)
    assert entry is not None and entry.state is PeerState.REFUSED and entry.retry_refused
    assert "sent nothing" in (entry.reason or "")
    assert len(links.dials[DEAD]) >= 3  # retried, with backoff (redial_due)


async def test_a_peer_refused_on_its_bytes_is_not_redialled_by_the_heartbeat(
        autojump_clock: trio.abc.Clock) -> None:
    # e.g. a node of another mesh on the same LAN, found over mDNS: one WARNING, not one
    # a minute forever.
    links = MismatchLinks(DEAD, suspected=False)
    await heartbeats_after_one_refusal(links)
    assert len(links.dials[DEAD]) == 1


async def test_a_peerllm_node_met_before_its_handlers_were_set_is_asked_again() -> None:
    # It listened before registering node-info: its first identify lacked it.
    early = PeerIdentity(agent="peerllm/0.1.0", protocols=("/ipfs/id/1.0.0",))
    identifier = FakeIdentifier({NODE: early})
    identifier.cached.add(NODE)
    identifier.agents.add(NODE)
    registry = PeerRegistry("self", stale_after_s=1e9, max_peers=8)
    registry.saw(NODE, Source.INBOUND, now=0)
    plain = PlainPeers(registry, identifier)
    assert await plain.is_plain(NODE)
    entry = registry.get(NODE)
    assert entry is not None and entry.state is PeerState.LIBP2P
    # Handlers set; the host's cache may still hold the old answer (no push reached us).
    identifier.plain[NODE] = dataclasses.replace(
        early, protocols=(*early.protocols, wni.PROTOCOL_ID))
    identifier.cached.discard(NODE)
    assert not await plain.is_plain(NODE)  # a fresh identify: node-info is asked now
    assert identifier.asked == [NODE]


async def test_a_peer_the_dht_named_is_redialled_though_its_entry_has_no_address(
        autojump_clock: trio.abc.Clock) -> None:
    # Its addresses are in the host's peerstore (its relay address comes later, once it
    # holds a slot): a first failed dial must not be the last.
    links = Links(up=set())
    m, registry, _ = membership(links, FakeIdentifier())
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run)
        await m.connect_peer(DEAD, [], Source.DHT)
        entry = registry.get(DEAD)
        assert entry is not None and entry.addrs == []
        entry.first_seen -= 3600  # redial_due reads the wall clock; autojump does not move it
        await trio.sleep(m._p2p.heartbeat_interval_s * HEARTBEATS)
        nursery.cancel_scope.cancel()
    assert len(links.dials[DEAD]) >= 3
