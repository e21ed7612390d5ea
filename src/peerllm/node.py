"""The composition root: one node = identity + libp2p host + discovery + node-info + API.

Everything runs in one nursery owned by ``open_node``; leaving the ``async with``
cancels it all.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ._version import __version__
from .config import NodeConfig
from .errors import (
    ModelNotFound,
    NetworkKeyMismatch,
    PeerConnectionLost,
    PeerError,
    PeerUnavailable,
    ProtocolError,
)
from .identity import Identity, default_data_dir, load_identity
from .inference.catalog import build_catalog
from .inference.engine import Engine
from .inference.registry import ModelStatus, open_registry
from .inference.request import ChatMessage, Done, GenerationRequest, SamplingParams, TokenChunk
from .inference.resources import GpuProbe, probe_resources
from .inference.settings import InferenceConfig
from .inference.specs import ModelSpec, node_specs
from .metrics import Metrics
from .p2p.dht import Dht, open_dht
from .p2p.host import ConnectionEvent, P2PHost, open_host
from .p2p.infer import InferServer
from .p2p.known_peers import KnownPeers
from .p2p.nodeinfo import NodeInfoClient, serve_node_info
from .p2p.registry import PeerRegistry, PeerState, Source
from .router import Routed, Router
from .scheduling.candidates import Candidate
from .serving import serve_generator
from .wire import infer as wi
from .wire import nodeinfo as wni

logger = logging.getLogger(__name__)

FEATURES = ("node-info", "dht-records", "mdns", "network-gate", "infer")


@dataclass(frozen=True, kw_only=True)
class NameLookup:
    """Where a friendly name points, as found in the DHT."""

    name: str
    peer_id: str
    node_id: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]


class Node:
    """A running PeerLLM node. Create with :func:`open_node`; do not instantiate directly."""

    def __init__(self, *, config: NodeConfig, identity: Identity, data_dir: Path, host: P2PHost,
                 dht: Dht | None, engine: Engine | None) -> None:
        self.config = config
        self.identity = identity
        self.data_dir = data_dir
        self.host = host
        self.dht = dht
        self.engine = engine
        self.metrics = Metrics()
        self.registry = PeerRegistry(host.peer_id, stale_after_s=config.p2p.peer_stale_s,
                                     max_peers=config.p2p.max_peers)
        self.info_client = NodeInfoClient(host, call_timeout_s=config.p2p.call_timeout_s)
        self.known_peers = KnownPeers(data_dir / "known_peers.json",
                                      limit=config.discovery.known_peers_max)
        self.boot_nonce = secrets.token_bytes(16)
        self.started_at = time.time()
        self.api_url: str | None = None
        self._started_mono = trio.current_time()
        self._seq = 0
        self._gpus = GpuProbe()
        self._connecting: set[str] = set()
        self._wake = trio.Event()
        self.router = Router(self)
        self._nursery: trio.Nursery | None = None

    # -- what we are -----------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    @property
    def name(self) -> str:
        return self.identity.name

    def addrs(self) -> list[str]:
        return self.host.addrs()

    def node_info(self) -> wni.NodeInfo:
        """This node's NodeInfo right now (fresh resources, next seq)."""
        self._seq += 1
        ident = self.identity
        statuses = self.model_statuses()
        return wni.NodeInfo(
            protocol_version=wni.PROTOCOL_VERSION,
            software_version=__version__,
            peer_id=self.peer_id,
            node_id=ident.node_id,
            name=ident.name,
            location=ident.location,
            tags=ident.tags,
            boot_nonce=self.boot_nonce,
            started_at=self.started_at,
            issued_at=time.time(),
            seq=self._seq,
            addrs=tuple(self.addrs()),
            capabilities=wni.Capabilities(protocols=(wni.PROTOCOL_ID, wi.PROTOCOL_ID),
                                          features=FEATURES,
                                          private_network=self.host.network_key.key is not None),
            resources=probe_resources(self._gpus),
            models=tuple(wni.ModelInfo(id=m.id, loaded=m.state == "loaded",
                                       context_size=m.context_size,
                                       size_bytes=m.memory_bytes or None, tags=m.tags)
                         for m in statuses),
            load=self.load(statuses),
            performance=wni.Performance(
                tokens_per_second=max((m.tokens_per_second for m in statuses
                                       if m.tokens_per_second is not None), default=None),
                ttft_ms=min((m.ttft_ms for m in statuses if m.ttft_ms is not None),
                            default=None)),
        )

    def info_document(self) -> dict[str, Any]:
        """The ``GET /v1/node/info`` document (also ``self`` in ``peers --json``)."""
        info = self.node_info()
        return {
            "node": {
                "id": info.node_id,
                "peer_id": info.peer_id,
                "name": info.name,
                "version": info.software_version,
                "uptime_seconds": round(trio.current_time() - self._started_mono, 3),
                "location": info.location,
                "tags": list(info.tags),
                "boot_nonce": info.boot_nonce.hex(),
            },
            "capabilities": {
                "protocols": list(info.capabilities.protocols),
                "features": list(info.capabilities.features),
                "private_network": info.capabilities.private_network,
                "protocol_version": info.protocol_version,
            },
            "resources": {
                "cpu_cores": info.resources.cpu_cores,
                "ram_total_bytes": info.resources.ram_total_bytes,
                "ram_free_bytes": info.resources.ram_free_bytes,
                "gpus": [{"index": g.index, "name": g.name, "vram_total_bytes": g.vram_total_bytes,
                          "vram_free_bytes": g.vram_free_bytes} for g in info.resources.gpus],
            },
            "network": {
                "addrs": list(info.addrs),
                "peer_count": sum(1 for e in self.registry.entries()
                                  if e.state is PeerState.HEALTHY),
                "connected": len(self.host.connected_peers()),
                "network": self.host.network_key.describe(),
                "api": self.api_url,
            },
            "models": [{"id": m.id, "loaded": m.loaded, "size_bytes": m.size_bytes,
                        "context_size": m.context_size, "tags": list(m.tags)} for m in info.models],
            "load": {"active": info.load.active, "queued": info.load.queued,
                     "capacity": info.load.capacity},
            "performance": {"tokens_per_second": info.performance.tokens_per_second,
                            "ttft_ms": info.performance.ttft_ms},
        }

    def status(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for e in self.registry.entries():
            states[e.state.value] = states.get(e.state.value, 0) + 1
        return {"status": "ok", "peer_id": self.peer_id, "name": self.name,
                "uptime_seconds": round(trio.current_time() - self._started_mono, 3),
                "peers": states, "connected": len(self.host.connected_peers())}

    def peers(self) -> list[dict[str, Any]]:
        """The registry view: one dict per known peer (the ``peers --json`` rows)."""
        self.registry.refresh_states(now=time.time())
        rows = self.registry.snapshot()
        for row in rows:
            row["breaker"] = self.router.breaker_state(row["peer_id"])
        return rows

    def local_resources(self) -> wni.Resources:
        return probe_resources(self._gpus)

    def model_statuses(self) -> list[ModelStatus]:
        return self.engine.registry.list() if self.engine is not None else []

    def model_ids(self) -> list[str]:
        return [m.id for m in self.model_statuses()]

    def load(self, statuses: list[ModelStatus] | None = None) -> wni.Load:
        """Generations running and queued here, and how many can run at once."""
        statuses = self.model_statuses() if statuses is None else statuses
        return wni.Load(active=sum(m.active for m in statuses),
                        queued=sum(m.queued for m in statuses),
                        capacity=self.capacity() if statuses else 0)

    def capacity(self) -> int:
        """How many generations this node runs at once across its models."""
        if self.engine is None:
            return 0
        return self.engine.registry.config.max_concurrent * max(1, len(self.model_ids()))

    # -- inference -------------------------------------------------------------------

    def open_generation(self, req: GenerationRequest, *, session: str | None = None
                        ) -> AbstractAsyncContextManager[Routed]:
        """``async with node.open_generation(req) as routed``: place ``req`` on the best
        node (this one or a peer) and stream its output from ``routed.events()``.

        Raises:
            NoRoute: no node can serve the model (``reasons`` per candidate).
            InferenceRejected: a refusal that retrying elsewhere cannot fix.
        """
        return self.router.open(req, session=session)

    def mesh_models(self) -> dict[str, list[Candidate]]:
        """Every model served anywhere in the mesh, with the nodes that serve it."""
        return self.router.known_models()

    async def embed(self, model: str, inputs: list[str]) -> list[list[float]]:
        """Embeddings from a local model.

        Raises:
            ModelNotFound: this node does not serve ``model`` (embeddings are local only).
        """
        if self.engine is None or model not in self.model_ids():
            raise ModelNotFound(model)
        return await self.engine.embed(model, inputs)

    async def chat(self, model: str, messages: list[dict[str, str]], *,
                   session: str | None = None, **params: Any) -> AsyncIterator[str]:
        """Stream a chat answer's text chunks, wherever in the mesh it runs.

        ``params`` are SamplingParams fields (max_tokens, temperature, top_p, stop, seed...).
        """
        req = GenerationRequest(
            model=model, params=SamplingParams(**_sampling(params)),
            messages=tuple(ChatMessage(role=m["role"], content=m["content"]) for m in messages))
        async for text in self._texts(req, session):
            yield text

    async def generate(self, model: str, prompt: str, *, session: str | None = None,
                       **params: Any) -> AsyncIterator[str]:
        """Stream a plain completion's text chunks, wherever in the mesh it runs."""
        req = GenerationRequest(model=model, prompt=prompt,
                                params=SamplingParams(**_sampling(params)))
        async for text in self._texts(req, session):
            yield text

    async def _texts(self, req: GenerationRequest, session: str | None) -> AsyncIterator[str]:
        async with self.open_generation(req, session=session) as routed:
            async for ev in routed.events():
                if isinstance(ev, TokenChunk):
                    yield ev.text
                elif isinstance(ev, Done):
                    return

    def suspect_peer(self, peer_id: str) -> None:
        """A request to ``peer_id`` just failed: stop routing to it now, re-check it soon."""
        self.registry.failed(peer_id, "a request to it failed", now=time.time(),
                             max_misses=self.config.p2p.heartbeat_misses)
        if self._nursery is not None:
            self._nursery.start_soon(self.refresh_peer, peer_id)

    def after_remote_request(self, peer_id: str) -> None:
        """A request on ``peer_id`` finished: refresh its load now, not at the next beat."""
        if self._nursery is not None and peer_id != self.peer_id:
            self._nursery.start_soon(self.refresh_peer, peer_id)

    # -- finding others --------------------------------------------------------------

    async def find_by_name(self, name: str) -> NameLookup | None:
        """Resolve a friendly name through the registry, then the DHT's signed records."""
        for e in self.registry.by_name(name):
            if e.info is not None and e.state is PeerState.HEALTHY:
                return NameLookup(name=name, peer_id=e.peer_id, node_id=e.info.node_id,
                                  addrs=e.info.addrs, models=tuple(m.id for m in e.info.models))
        if self.dht is None:
            return None
        claim = await self.dht.find_name(name)
        if claim is None:
            return None
        record = await self.dht.find_node(claim.peer_id)
        return NameLookup(name=name, peer_id=claim.peer_id, node_id=claim.node_id,
                          addrs=record.addrs if record else (),
                          models=record.models if record else ())

    async def find_providers(self, model: str) -> list[tuple[str, list[str]]]:
        if self.dht is None:
            return []
        return await self.dht.find_providers(model)

    async def connect_peer(self, peer_id: str, addrs: list[str], source: Source) -> bool:
        """Note ``peer_id`` from ``source``, connect and fetch its node-info. True if healthy."""
        entry = self.registry.saw(peer_id, source, now=time.time(), addrs=addrs)
        if entry is None or peer_id in self._connecting:
            return entry is not None and entry.state is PeerState.HEALTHY
        self._connecting.add(peer_id)
        try:
            await self.host.connect(peer_id, entry.addrs)
            if self.dht is not None:
                await self.dht.add_peer(peer_id)
            await self.refresh_peer(peer_id)
        except NetworkKeyMismatch as exc:
            logger.warning("peer %s is in another network: %s", peer_id, exc.message)
            self.registry.failed(peer_id, "network key differs", now=time.time(), refused=True)
        except PeerError as exc:
            logger.info("cannot reach %s (%s): %s", peer_id, source.value, exc.message)
            self.registry.failed(peer_id, exc.message, now=time.time(),
                                 max_misses=self.config.p2p.heartbeat_misses)
        finally:
            self._connecting.discard(peer_id)
        e = self.registry.get(peer_id)
        return e is not None and e.state is PeerState.HEALTHY

    async def refresh_peer(self, peer_id: str) -> None:
        """Ask one peer for its node-info now and record the outcome."""
        try:
            info, rtt_ms = await self.info_client.fetch(peer_id)
        except (PeerError, ProtocolError) as exc:
            if isinstance(exc, PeerUnavailable | PeerConnectionLost) \
                    and not self.host.is_connected(peer_id):
                # Refused, or its connection dropped: it is gone (or cut off) until it
                # answers again.
                self.router.peer_down(peer_id)
            reason = exc.message if isinstance(exc, PeerError) else f"bad node-info: {exc}"
            entry = self.registry.failed(peer_id, reason, now=time.time(),
                                         refused=isinstance(exc, NetworkKeyMismatch),
                                         max_misses=self.config.p2p.heartbeat_misses)
            if entry is not None and entry.state is PeerState.UNREACHABLE:
                # Yamux never notices a frozen peer; drop the connection so a redial
                # starts clean when it comes back.
                await self.host.disconnect(peer_id)
            return
        entry = self.registry.info_received(peer_id, info, rtt_ms=rtt_ms, now=time.time(),
                                            compatible_version=wni.PROTOCOL_VERSION)
        if entry is not None:
            self.known_peers.remember(peer_id, list(info.addrs), info.name)
            self._check_name(peer_id, info.name)

    def _check_name(self, peer_id: str, name: str) -> None:
        """Flag two live keys answering to one friendly name (names are not unique by force)."""
        if name == self.name:
            msg = f"uses our name {name!r}"
            entry = self.registry.get(peer_id)
            if entry is not None and msg not in entry.conflicts:
                logger.warning("peer %s also calls itself %r; names should be unique "
                               "(pick another with --name)", peer_id, name)
            self.registry.note_name_conflict(peer_id, msg)
        for other in self.registry.by_name(name):
            if other.peer_id != peer_id:
                self.registry.note_name_conflict(peer_id, f"name {name!r} also used by "
                                                          f"{other.peer_id}")
                self.registry.note_name_conflict(other.peer_id, f"name {name!r} also used by "
                                                                f"{peer_id}")

    # -- background work -------------------------------------------------------------

    async def _on_connection_events(self, nursery: trio.Nursery) -> None:
        async for ev in self.host.events:
            self._on_connection_event(ev, nursery)

    def _on_connection_event(self, ev: ConnectionEvent, nursery: trio.Nursery) -> None:
        now = time.time()
        if ev.kind == "disconnected":
            self.registry.set_connected(ev.peer_id, False, now=now)
            return
        if ev.inbound:
            self.registry.saw(ev.peer_id, Source.INBOUND, now=now)
        self.registry.set_connected(ev.peer_id, True, now=now)
        if ev.peer_id not in self._connecting:
            nursery.start_soon(self._welcome, ev.peer_id)

    async def _welcome(self, peer_id: str) -> None:
        if self.dht is not None:
            await self.dht.add_peer(peer_id)
        entry = self.registry.get(peer_id)
        if entry is not None and entry.info is None:
            await self.refresh_peer(peer_id)

    async def _bootstrap(self, addr: str) -> None:
        delay = 0.5
        while True:
            try:
                peer_id = await self.host.connect_addr(addr)
            except NetworkKeyMismatch as exc:
                logger.error("bootstrap peer %s is in another network: %s", addr, exc.message)
                self.registry.saw(exc.peer_id, Source.BOOTSTRAP, now=time.time(), addrs=[addr])
                self.registry.failed(exc.peer_id, "network key differs", now=time.time(),
                                     refused=True)
                return
            except PeerError as exc:
                logger.info("bootstrap %s not reachable yet: %s", addr, exc.message)
            except ValueError as exc:  # unparsable multiaddr slipped past config validation
                logger.error("bad bootstrap address %s: %s", addr, exc)
                return
            else:
                await self.connect_peer(peer_id, [addr], Source.BOOTSTRAP)
                if self.dht is not None:
                    self._wake.set()
                e = self.registry.get(peer_id)
                if e is not None and e.state is PeerState.HEALTHY:
                    delay = 0.5
                # Keep watching: a bootstrap peer that drops is redialled.
                while self.host.is_connected(peer_id):
                    await trio.sleep(self.config.p2p.heartbeat_interval_s)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _redial_known(self, nursery: trio.Nursery) -> None:
        for peer_id, addrs in self.known_peers.load():
            nursery.start_soon(self.connect_peer, peer_id, addrs, Source.CACHE)

    async def _heartbeat(self, nursery: trio.Nursery) -> None:
        interval = self.config.p2p.heartbeat_interval_s
        while True:
            await trio.sleep(interval)
            now = time.time()
            for entry in self.registry.entries():
                if entry.peer_id in self._connecting:
                    continue
                if entry.connected or entry.state in (PeerState.HEALTHY, PeerState.STALE):
                    nursery.start_soon(self.refresh_peer, entry.peer_id)
                elif entry.state is PeerState.UNREACHABLE and entry.addrs:
                    # Redial with a backoff of interval × 2^failures, capped at 60 s.
                    wait = min(interval * 2 ** min(entry.consecutive_failures, 6), 60.0)
                    if now - (entry.last_seen or entry.first_seen) >= wait:
                        nursery.start_soon(self.connect_peer, entry.peer_id, entry.addrs,
                                           next(iter(entry.sources), Source.CACHE))
            self.registry.refresh_states(now=now)
            self.known_peers.save_if_dirty()

    async def _dht_maintenance(self, nursery: trio.Nursery) -> None:
        dht = self.dht
        if dht is None:
            return
        cfg = self.config.discovery
        last_publish = -1e9
        fast_until = trio.current_time() + 30.0
        while True:
            if trio.current_time() - last_publish >= cfg.dht_republish_s and dht.routing_peers():
                last_publish = trio.current_time()
                nursery.start_soon(self._publish)
            await dht.refresh()
            for peer_id in dht.routing_peers():
                entry = self.registry.get(peer_id)
                # Unreachable and refused peers are redialled by the heartbeat, with backoff.
                if entry is None or (entry.state is not PeerState.HEALTHY and not entry.connected
                                     and entry.state not in (PeerState.REFUSED,
                                                             PeerState.UNREACHABLE)):
                    nursery.start_soon(self.connect_peer, peer_id, [], Source.DHT)
                elif Source.DHT not in entry.sources:
                    entry.sources.add(Source.DHT)
            # Poll fast while the mesh forms, then settle down.
            period = 1.0 if trio.current_time() < fast_until else 30.0
            with trio.move_on_after(period):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _publish(self) -> None:
        if self.dht is None:
            return
        await self.dht.publish(addrs=self.addrs(), models=self.model_ids(),
                               ttl_s=self.config.discovery.record_ttl_s)
        claim = await self.dht.find_name(self.name)
        if claim is not None and claim.peer_id != self.peer_id:
            logger.warning("name %r is also claimed in the DHT by %s (node %s); "
                           "choose another --name to avoid confusion",
                           self.name, claim.peer_id, claim.node_id)
            self.registry.saw(claim.peer_id, Source.DHT, now=time.time())
            self.registry.note_name_conflict(claim.peer_id, f"also claims our name {self.name!r}")

    async def _mdns(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        from .errors import DiscoveryError
        from .p2p.mdns import MdnsAnnouncement, open_mdns

        addrs = tuple(self.addrs())
        port = _first_tcp_port(addrs)
        ann = MdnsAnnouncement(peer_id=self.peer_id, name=self.name, port=port, addrs=addrs,
                               models=tuple(self.model_ids()))
        try:
            async with open_mdns(ann, interfaces=self.config.discovery.mdns_interfaces) as mdns:
                task_status.started()
                async with trio.open_nursery() as nursery:
                    async for peer in mdns.discovered():
                        nursery.start_soon(self.connect_peer, peer.peer_id, list(peer.addrs),
                                           Source.MDNS)
        except DiscoveryError as exc:
            logger.error("mDNS discovery is off: %s", exc)
            task_status.started()


def _first_tcp_port(addrs: tuple[str, ...]) -> int:
    for a in addrs:
        parts = a.split("/")
        if "tcp" in parts:
            i = parts.index("tcp")
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                return int(parts[i + 1])
    return 0


def _sampling(params: dict[str, Any]) -> dict[str, Any]:
    if "stop" in params and isinstance(params["stop"], list | str):
        stop = params["stop"]
        params = {**params, "stop": (stop,) if isinstance(stop, str) else tuple(stop)}
    return params


def model_specs(cfg: NodeConfig, inference: InferenceConfig) -> list[ModelSpec]:
    """The models this node serves: the bundled default, --model files or ids, models.yaml.

    A bad --model entry is logged and skipped so the others still serve; a bad
    models.yaml stops the node (ConfigError names the key).
    """
    catalog = build_catalog(serve_default=cfg.models.serve_default, paths=cfg.models.paths,
                            models_dir=inference.models_dir)
    return node_specs(catalog=catalog, models_yaml=inference.models_config_path,
                      models_dir=inference.models_dir, context_size=inference.context_size,
                      gpu_layers=inference.gpu_layers)


@asynccontextmanager
async def open_node(config: NodeConfig | None = None, *,
                    inference: InferenceConfig | None = None) -> AsyncIterator[Node]:
    """Run a full PeerLLM node inside the caller's trio program.

    The node is listening, announcing and serving its HTTP API when the block is
    entered; leaving the block shuts it all down (models are freed).

    Raises:
        IdentityError: the key or identity file is corrupt or unreadable.
        ConfigError: a setting is unusable (e.g. a bad models.yaml).
    """
    from .api.server import serve_api

    cfg = config or NodeConfig()
    inf = inference or InferenceConfig()
    data_dir = cfg.data_dir or default_data_dir(dict(os.environ))
    identity = load_identity(data_dir, name=cfg.node.name, node_id=cfg.node.id,
                             location=cfg.node.location, tags=cfg.node.tags)
    specs = model_specs(cfg, inf)
    async with _maybe(open_registry(specs, config=inf) if specs else None) as registry, \
            open_host(identity, listen=cfg.p2p.listen, announce=cfg.p2p.announce,
                      network_key=cfg.p2p.network_key, dial_timeout_s=cfg.p2p.dial_timeout_s,
                      max_peers=cfg.p2p.max_peers) as host:
        engine = Engine(registry) if registry is not None else None
        dht_cm = open_dht(host, identity) if cfg.discovery.dht else None
        async with _maybe(dht_cm) as dht, trio.open_nursery() as nursery:
            node = Node(config=cfg, identity=identity, data_dir=data_dir, host=host, dht=dht,
                        engine=engine)
            node._nursery = nursery
            host.set_handler(wni.PROTOCOL_ID, _info_handler(node))
            server = InferServer(self_peer_id=node.peer_id, generate=serve_generator(node),
                                 load=node.load)
            host.set_handler(wi.PROTOCOL_ID, server.handle)
            nursery.start_soon(node._on_connection_events, nursery)
            nursery.start_soon(node._heartbeat, nursery)
            node.api_url = await nursery.start(serve_api, node)
            if cfg.discovery.mdns:
                await nursery.start(node._mdns)
            await node._redial_known(nursery)
            for addr in cfg.p2p.bootstrap:
                nursery.start_soon(node._bootstrap, addr)
            nursery.start_soon(node._dht_maintenance, nursery)
            try:
                yield node
            finally:
                node.known_peers.save_if_dirty()
                with trio.move_on_after(1, shield=True):
                    await node.info_client.aclose()
                nursery.cancel_scope.cancel()


def _info_handler(node: Node) -> Any:
    async def handler(stream: Any) -> None:
        await serve_node_info(stream, identity=node.identity, current_info=node.node_info)

    return handler


@asynccontextmanager
async def _maybe(cm: Any) -> AsyncIterator[Any]:
    if cm is None:
        yield None
    else:
        async with cm as value:
            yield value
