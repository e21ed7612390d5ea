"""MeshProviders: holders from the peer registry's node-info first, else the DHT's
providers once dialled."""

from __future__ import annotations

import time

from peerllm.mesh.providers import MeshProviders
from peerllm.p2p.registry import PeerRegistry, Source
from peerllm.testing import make_node_info
from peerllm.wire import nodeinfo as wni


class Dialer:
    def __init__(self, registry: PeerRegistry, providers: dict[str, list[str]]) -> None:
        self.registry = registry
        self.providers = providers
        self.dialled: list[str] = []

    async def find_providers(self, model: str) -> list[tuple[str, list[str]]]:
        return [(p, ["/ip4/127.0.0.1/tcp/1"]) for p in self.providers.get(model, [])]

    async def connect_peer(self, peer_id: str, addrs: list[str], source: Source) -> bool:
        self.dialled.append(peer_id)
        healthy(self.registry, peer_id, "m")
        return True


def healthy(registry: PeerRegistry, peer_id: str, *models: str) -> None:
    now = time.time()
    registry.saw(peer_id, Source.BOOTSTRAP, now=now)
    registry.info_received(peer_id, make_node_info(peer_id, models=models), rtt_ms=1.0,
                           now=now, compatible_version=wni.PROTOCOL_VERSION)


async def test_peers_listing_the_model_are_its_holders_without_asking_the_dht() -> None:
    registry = PeerRegistry("self", stale_after_s=60.0, max_peers=10)
    healthy(registry, "a", "m", "n")
    healthy(registry, "b", "n")
    dialer = Dialer(registry, {"m": ["c"]})
    found = await MeshProviders(registry=registry, dialer=dialer, self_peer_id="self").find("m")
    assert [(h.peer_id, h.model_id) for h in found] == [("a", "m")]
    assert dialer.dialled == []


async def test_the_dhts_providers_are_dialled_when_no_peer_lists_it() -> None:
    registry = PeerRegistry("self", stale_after_s=60.0, max_peers=10)
    dialer = Dialer(registry, {"m": ["self", "c"]})
    found = await MeshProviders(registry=registry, dialer=dialer, self_peer_id="self").find("m")
    assert [h.peer_id for h in found] == ["c"] and dialer.dialled == ["c"]


async def test_nobody_holds_it() -> None:
    registry = PeerRegistry("self", stale_after_s=60.0, max_peers=10)
    finder = MeshProviders(registry=registry, dialer=Dialer(registry, {}), self_peer_id="self")
    assert await finder.find("sha256:" + "00" * 32) == []
