"""mesh.membership when the router has nowhere left to send a request: redial the
model's known providers that dropped out (a replica restarted moments ago) before
walking the DHT. The host, node-info client and DHT are small fakes."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import trio

from peerllm.config import NodeConfig
from peerllm.errors import PeerUnavailable
from peerllm.mesh.membership import Membership
from peerllm.p2p.host import ConnectionEvent
from peerllm.p2p.known_peers import KnownPeers
from peerllm.p2p.registry import PeerRegistry, PeerState, Source
from peerllm.testing import make_node_info
from peerllm.wire import nodeinfo as w

MODEL = "m"


class _Links:
    """P2PHost as membership's redial sees it: which peers are listening again."""

    def __init__(self, up: set[str]) -> None:
        self.up = up
        self.dialled: list[str] = []

    def is_connected(self, peer_id: str) -> bool:
        return False

    async def connect(self, peer_id: str, addrs: list[str]) -> None:
        self.dialled.append(peer_id)
        if peer_id not in self.up:
            raise PeerUnavailable(peer_id, "dial failed: connection refused")

    async def disconnect(self, peer_id: str) -> None:
        pass


class _InfoClient:
    async def fetch(self, peer_id: str) -> tuple[w.NodeInfo, float]:
        return make_node_info(peer_id, models=(MODEL,), boot_nonce=b"\x02" * 16), 1.0


class _Dht:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def add_peer(self, peer_id: str) -> None:
        pass

    async def find_providers(self, model: str, count: int = 20
                             ) -> list[tuple[str, list[str]]]:
        self.asked.append(model)
        return []


def written_off(*peers: str, refused: tuple[str, ...] = ()) -> PeerRegistry:
    """A registry whose ``peers`` served MODEL ("other-model" another) until their last
    node-info call failed."""
    registry = PeerRegistry("self", stale_after_s=1e9, max_peers=64)
    now = time.time()
    for peer in peers:
        registry.saw(peer, Source.BOOTSTRAP, now=now, addrs=[f"/ip4/127.0.0.1/tcp/1/p2p/{peer}"])
        registry.info_received(peer, make_node_info(peer, models=(
            "other",) if peer == "other-model" else (MODEL,)), rtt_ms=1.0, now=now,
            compatible_version=w.PROTOCOL_VERSION)
        registry.failed(peer, "write failed: StreamReset()", now=now, max_misses=1,
                        refused=peer in refused)
    return registry


def make_membership(registry: PeerRegistry, links: _Links, dht: _Dht) -> Membership:
    cfg = NodeConfig()
    return Membership(
        local=cast(Any, SimpleNamespace(name="self")), host=cast(Any, links),
        dht=cast(Any, dht), registry=registry, info_client=cast(Any, _InfoClient()),
        known_peers=KnownPeers(Path("/nonexistent/known_peers.json"), limit=8),
        p2p=cfg.p2p, discovery=cfg.discovery, on_peer_down=lambda peer: None)


async def test_discover_redials_known_providers_that_dropped_out_before_the_dht(
        autojump_clock: trio.abc.Clock) -> None:
    registry = written_off("restarted", "still-down", "refused", "other-model",
                           refused=("refused",))
    links, dht = _Links(up={"restarted"}), _Dht()
    membership = make_membership(registry, links, dht)
    await membership.discover(MODEL)
    assert sorted(links.dialled) == ["restarted", "still-down"]
    assert registry.get("restarted").state is PeerState.HEALTHY  # type: ignore[union-attr]
    assert dht.asked == []  # one provider is back: no DHT walk
    links.up.clear()
    await membership.discover(MODEL)
    assert dht.asked == [MODEL]  # nobody came back: ask the DHT


async def test_a_written_off_peer_that_connects_again_is_asked_for_node_info_at_once(
        autojump_clock: trio.abc.Clock) -> None:
    registry = written_off("restarted")
    membership = make_membership(registry, _Links(up=set()), _Dht())
    async with trio.open_nursery() as nursery:
        membership._on_connection_event(ConnectionEvent(
            kind="connected", peer_id="restarted", inbound=True, addr=None), nursery)
    entry = registry.get("restarted")
    assert entry is not None and entry.state is PeerState.HEALTHY
    assert entry.info is not None and entry.info.boot_nonce == b"\x02" * 16  # the new process
    assert trio.current_time() == 0  # not at the next heartbeat
