"""Fakes for the mesh tests: a router over scripted peers, membership over fake links."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import trio

from peerllm.config import NodeConfig
from peerllm.errors import (
    PeerTimeout,
    PeerUnavailable,
)
from peerllm.events import Done, TokenChunk
from peerllm.inference.request import GenerationRequest, SamplingParams
from peerllm.mesh.breakers import BreakerBook
from peerllm.mesh.membership import Membership
from peerllm.mesh.router import Router, breaker_config
from peerllm.p2p.identify import PeerIdentity
from peerllm.p2p.known_peers import KnownPeers
from peerllm.p2p.registry import PeerRegistry, Source
from peerllm.scheduling.filter import Policy
from peerllm.testing import ScriptedInferClient, Step, make_node_info
from peerllm.wire import infer as wi
from peerllm.wire import nodeinfo as w

MODEL = "m"


def info(peer_id: str, nonce: bytes = b"\x01" * 16) -> w.NodeInfo:
    return make_node_info(peer_id, models=(MODEL,), boot_nonce=nonce)


class FakeHost:
    def __init__(self) -> None:
        self.down: set[str] = set()
        self.disconnected: list[str] = []

    def is_connected(self, peer_id: str) -> bool:
        return peer_id not in self.down

    async def disconnect(self, peer_id: str) -> None:
        self.disconnected.append(peer_id)


class FakeNode:
    """The router's ports in one place: self view (no engine), registry, links, hooks."""

    def __init__(self, peers: list[str]) -> None:
        self.config = NodeConfig()
        self.peer_id = "self"
        self.name = "self"
        self.engine = None
        self.host = FakeHost()
        self.registry = PeerRegistry("self", stale_after_s=1e9, max_peers=64)
        self.suspected: list[str] = []
        self.discovered: list[str] = []
        self.on_discover: Callable[[], Awaitable[None]] | None = None
        for p in peers:
            self.restart(p, b"\x01" * 16)

    def restart(self, peer_id: str, nonce: bytes) -> None:
        import time
        self.registry.saw(peer_id, Source.BOOTSTRAP, now=time.time())
        self.registry.info_received(peer_id, info(peer_id, nonce), rtt_ms=1.0, now=time.time(),
                                    compatible_version=w.PROTOCOL_VERSION)

    def model_statuses(self) -> list[Any]:
        return []

    def resources(self) -> w.Resources:
        return w.Resources(cpu_cores=2, ram_total_bytes=1, ram_free_bytes=1, gpus=())

    def capacity(self) -> int:
        return 0

    def prefixes(self, model_id: str) -> tuple[bytes, ...]:
        return ()

    def suspect_peer(self, peer_id: str) -> None:
        self.suspected.append(peer_id)

    def after_remote_request(self, peer_id: str) -> None:
        pass

    async def discover(self, model: str) -> None:
        self.discovered.append(model)
        if self.on_discover is not None:
            await self.on_discover()


def make_router(scripts: dict[str, list[list[Step]]], *, seed: int = 1
                ) -> tuple[Router, FakeNode, ScriptedInferClient]:
    node = FakeNode(list(scripts))
    client = ScriptedInferClient(scripts)
    cfg = node.config
    breakers = BreakerBook(breaker_config(cfg.scheduling), node.registry, self_peer_id="self",
                           clock=trio.current_time)
    p2p = cfg.p2p
    router = Router(local=cast(Any, node), registry=node.registry, breakers=breakers,
                    transport=cast(Any, client), links=node.host, hooks=node,
                    settings=cfg.scheduling, rng=random.Random(seed),
                    policy=Policy(protocol=wi.PROTOCOL_ID, breaker=breakers.config,
                                  max_info_age_s=p2p.heartbeat_interval_s
                                  * (p2p.heartbeat_misses + 1)))
    return router, node, client


REQ = GenerationRequest(model=MODEL, prompt="hi", params=SamplingParams(max_tokens=8))


async def run(router: Router, *, deadline_s: float = 300.0) -> tuple[str, Done]:
    text = ""
    async with router.open(REQ, deadline_s=deadline_s) as routed:
        async for ev in routed.events():
            if isinstance(ev, TokenChunk):
                text += ev.text
            else:
                return text, ev
    raise AssertionError("no Done")


def timeout(peer: str) -> PeerTimeout:
    return PeerTimeout(peer, "no answer", phase="call")


def ok() -> list[Step]:
    return [0.1, "a", "b", "done"]


def state(router: Router, peer: str) -> str:
    return router.breakers.describe(peer).split(":")[0].split(" ")[0]




class FakeLinks:
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


class FakeInfoClient:
    async def fetch(self, peer_id: str) -> tuple[w.NodeInfo, float]:
        return make_node_info(peer_id, models=(MODEL,), boot_nonce=b"\x02" * 16), 1.0


class FakeIdentifier:
    """Identify as membership sees it: ``plain`` peers answer without node-info (and the
    host's cache knows it once ``cached`` holds them); everyone else cannot be asked."""

    def __init__(self, plain: dict[str, PeerIdentity] | None = None) -> None:
        self.plain = plain or {}
        self.cached: set[str] = set()
        self.agents: set[str] = set()  # cached peers whose agent the host kept too
        self.refuses: set[str] = set()  # peers that reset a second identify stream
        self.asked: list[str] = []

    def cached_protocols(self, peer_id: str) -> tuple[str, ...] | None:
        return self.plain[peer_id].protocols if peer_id in self.cached else None

    def cached_agent(self, peer_id: str) -> str | None:
        if peer_id in self.cached and peer_id in self.agents:
            return self.plain[peer_id].agent
        return None

    async def identify(self, peer_id: str) -> PeerIdentity:
        self.asked.append(peer_id)
        if peer_id not in self.plain or peer_id in self.refuses:
            raise PeerUnavailable(peer_id, "cannot open /ipfs/id/1.0.0")
        return self.plain[peer_id]


class FakeDht:
    """Counts provider lookups; ``providers`` is what it answers per model."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.providers: dict[str, list[tuple[str, list[str]]]] = {}

    async def add_peer(self, peer_id: str) -> None:
        pass

    async def find_providers(self, model: str, count: int = 20
                             ) -> list[tuple[str, list[str]]]:
        self.asked.append(model)
        return self.providers.get(model, [])


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


def make_membership(registry: PeerRegistry, links: FakeLinks, dht: FakeDht,
                    connected: list[str] | None = None, *, info_client: Any = None,
                    identifier: FakeIdentifier | None = None) -> Membership:
    """``connected`` collects the peers the on_peer_connected hook heard of."""
    cfg = NodeConfig()
    return Membership(
        local=cast(Any, SimpleNamespace(name="self", peer_id="self")), host=cast(Any, links),
        dht=cast(Any, dht), registry=registry,
        info_client=cast(Any, info_client or FakeInfoClient()),
        known_peers=KnownPeers(Path("/nonexistent/known_peers.json"), limit=8),
        p2p=cfg.p2p, discovery=cfg.discovery, on_peer_down=lambda peer: None,
        on_peer_connected=None if connected is None else connected.append,
        identifier=identifier or FakeIdentifier())


