"""The composition root and the facade: ``open_node`` wires config, identity, p2p,
inference and mesh in one nursery; ``Node`` is what callers hold.

The HTTP API is not started here: the daemon (cli/node.py) serves it next to the node
(``peerllm.api.serve_api``), and so can any library user who wants it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .audit import NULL_AUDIT, AuditSink, open_audit_log
from .audit import events as audit_events
from .auth import Authority, Principal
from .auth.credentials import NodeCredentials
from .auth.usage import UsageLedger
from .config import NodeConfig
from .config.audit import AUDIT_FILE
from .errors import ModelNotFound
from .events import Done, TokenChunk
from .identity import Identity, default_data_dir, load_identity
from .inference._concurrency import reraise_unwrapped
from .inference.backend import ModelBackend
from .inference.catalog import build_catalog
from .inference.engine import Engine
from .inference.registry import ModelStatus, open_registry
from .inference.request import ChatMessage, GenerationRequest, SamplingParams
from .inference.specs import ModelSpec, node_specs
from .mesh.accounting import Accounting
from .mesh.audited import SubjectNotes, audit_served
from .mesh.breakers import BreakerBook
from .mesh.digesting import Digests, keep_digests
from .mesh.distribution import build_distribution, models_root, open_http
from .mesh.documents import Json, info_document, limits_doc, peer_row
from .mesh.embedding import PlacedEmbeddings, serve_embedder
from .mesh.explain import explain
from .mesh.forwarding import ForwardedRequests
from .mesh.gossip import RevocationGossip
from .mesh.installing import StoreInstaller, stored_specs
from .mesh.local import LocalNode
from .mesh.membership import Membership, NameLookup
from .mesh.pulls import Pulls
from .mesh.relaying import ReservationKeeper, run_relay_service
from .mesh.replica_settings import SETTINGS_FILE, ReplicaSettings
from .mesh.replication import Replicator, build_replicator
from .mesh.routed import Routed
from .mesh.router import Router, breaker_config
from .mesh.serving import serve_generator
from .metrics import Metrics
from .p2p.blob import BlobServer
from .p2p.dht import Dht, open_dht
from .p2p.embed import EmbedClient, EmbedServer
from .p2p.holepunch import open_hole_punch
from .p2p.hop import HopLimits
from .p2p.host import P2PHost, open_host
from .p2p.infer import InferClient, InferServer
from .p2p.known_peers import KnownPeers
from .p2p.limits import PeerRate
from .p2p.nodeinfo import NodeInfoClient, serve_node_info
from .p2p.reachability import ReachabilityProber, serve_dial_backs
from .p2p.reachability_state import Reachability, ReachabilityState
from .p2p.registry import PeerRegistry, PeerState
from .p2p.revocations import RevocationServer
from .scheduling.candidates import Candidate
from .scheduling.filter import Policy
from .security_events import PeerLimit, PeerLimitHook
from .transfer.store import ModelStore
from .wire import blob as wb
from .wire import embed as we
from .wire import infer as wi
from .wire import nodeinfo as wni
from .wire import revocations as wrev

__all__ = ["NameLookup", "Node", "open_node"]

USAGE_DIR = "usage"
REVOCATION_PUSH_S = 120.0  # the longest an inbound revocation push may take


class Node:
    """A running PeerLLM node. Create with :func:`open_node`; do not instantiate directly."""

    def __init__(self, *, config: NodeConfig, data_dir: Path, local: LocalNode,
                 host: P2PHost, registry: PeerRegistry, membership: Membership,
                 router: Router, authority: Authority, credentials: NodeCredentials,
                 usage: UsageLedger, gossip: RevocationGossip, infer_server: InferServer,
                 embed_server: EmbedServer, info_rate: PeerRate, metrics: Metrics,
                 infer_client: InferClient, audit: AuditSink = NULL_AUDIT) -> None:
        self.config = config
        self.data_dir = data_dir
        self.local = local
        self.host = host
        self.registry = registry
        self.membership = membership
        self.router = router
        self.authority = authority  # tokens, trust, revocations, rates (the API's too)
        self.credentials = credentials  # our node certificate, delegations, receipts
        self.usage = usage  # usage totals and receipts (GET /v1/usage)
        self.gossip = gossip  # spreads revocations to and from peers
        self.infer_server = infer_server
        self.embed_server = embed_server
        self.infer_client = infer_client  # our inference streams to peers (the router's)
        self.info_rate = info_rate  # node-info requests per peer, over all its streams
        self.metrics = metrics
        self.audit = audit  # this node's audit log (NULL_AUDIT with audit.enabled false)
        self.api_url: str | None = None  # set by whoever serves the HTTP API
        self.digests = Digests()  # our model files' manifests by digest (mesh/digesting.py)
        self.pulls: Pulls | None = None  # model downloads (set by open_node)
        self.store: ModelStore | None = None  # pulled model files (set by open_node)
        self.blob_server: BlobServer | None = None  # serves our model files to peers
        self.replicator: Replicator | None = None  # keeps replica targets (set by open_node)
        self.installer: StoreInstaller | None = None  # pulled files in, deleted models out
        self.reachability = ReachabilityState(
            None if config.p2p.reachability == "auto" else Reachability(config.p2p.reachability))
        self.relays: ReservationKeeper | None = None  # our relay slots (set by open_node)
        self._started_mono = trio.current_time()

    # -- what we are -----------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        return self.local.identity

    @property
    def peer_id(self) -> str:
        return self.local.peer_id

    @property
    def name(self) -> str:
        return self.local.name

    @property
    def engine(self) -> Engine | None:
        return self.local.engine

    @property
    def started_at(self) -> float:
        return self.local.started_at

    @property
    def dht(self) -> Dht | None:
        return self.membership.dht

    def addrs(self) -> list[str]:
        return self.host.addrs()

    def model_statuses(self) -> list[ModelStatus]:
        return self.local.model_statuses()

    def model_ids(self) -> list[str]:
        return self.local.model_ids()

    def node_info(self) -> wni.NodeInfo:
        """This node's NodeInfo right now (fresh resources, next seq)."""
        return self.local.node_info()

    def info_document(self) -> Json:
        """The ``GET /v1/node/info`` document (also ``self`` in ``peers --json``)."""
        return info_document(
            self.node_info(), uptime_s=trio.current_time() - self._started_mono,
            network={"peer_count": sum(1 for e in self.registry.entries()
                                       if e.state is PeerState.HEALTHY),
                     "connected": len(self.host.connected_peers()),
                     "network": self.host.network_key.describe(),
                     "api": self.api_url},
            limits=limits_doc(self.config, infer=self.infer_server.statistics(),
                              embed=self.embed_server.statistics(),
                              info_refused=self.info_rate.refused)) | {"auth": self.auth_summary()}

    def status(self) -> Json:
        states: dict[str, int] = {}
        for e in self.registry.entries():
            states[e.state.value] = states.get(e.state.value, 0) + 1
        return {"status": "ok", "peer_id": self.peer_id, "name": self.name,
                "uptime_seconds": round(trio.current_time() - self._started_mono, 3),
                "peers": states, "connected": len(self.host.connected_peers()),
                "auth": self.auth_summary(), "warnings": self.warnings(),
                "uploads": self.blob_server.statistics() if self.blob_server else None,
                "reachability": {"status": self.reachability.status.value,
                                 "reason": self.reachability.reason},
                "relay": self.relay_status()}

    def relay_status(self) -> Json | None:
        """Our relay slots and our own relay service (None: circuit relay is off)."""
        relay = self.host.relay
        if relay is None:
            return None
        held = self.relays.held if self.relays is not None else {}
        return {"reservations": [{"relay": r, "expires_at": h.reservation.expires_at,
                                  "addrs": list(h.addrs)} for r, h in held.items()],
                "service": {"serving": relay.service.serving,
                            "reservations": relay.service.reservations(),
                            "circuits": relay.service.circuits,
                            "refused": relay.service.refused}}

    def auth_summary(self) -> Json:
        """Whether tokens are required here, and whose (public facts only)."""
        a = self.authority
        return {"required": a.required, "issuer": a.issuer_id,
                "trusted_issuers": sorted(a.trusted), "serve_peers": self.config.p2p.serve_peers}

    def warnings(self) -> list[str]:
        """What an operator should fix (shown at start and in ``/v1/node/status``)."""
        out: list[str] = []
        if self.config.api_exposed_without_auth:
            out.append(f"the HTTP API on {self.config.api.host} is open to the network "
                       "without auth (--insecure-no-auth): anyone who reaches it can use "
                       "and manage this node; use --require-auth")
        return out

    def peers(self) -> list[Json]:
        """One row per known peer (the ``peers --json`` rows), sorted by name."""
        self.registry.refresh_states(now=time.time())
        entries = sorted(self.registry.entries(), key=lambda e: (e.name or "~", e.peer_id))
        return [peer_row(e, breaker=self.router.breakers.describe(e.peer_id),
                         relay_name=self._name_of(e.relay)) for e in entries]

    def _name_of(self, peer_id: str | None) -> str | None:
        relay = self.registry.get(peer_id) if peer_id is not None else None
        return relay.name if relay is not None else None

    def explain(self, model: str) -> Json:
        """Why each node would (or would not) get a request for ``model`` right now."""
        return explain(self.router, model)

    # -- inference -------------------------------------------------------------------

    def open_generation(self, req: GenerationRequest, *, session: str | None = None,
                        principal: Principal | None = None
                        ) -> AbstractAsyncContextManager[Routed]:
        """``async with node.open_generation(req) as routed``: place ``req`` on the best
        node (this one or a peer) and stream its output from ``routed.events()``.

        ``principal`` is whom the request acts for, as ``node.authority`` verified it
        (the API passes its caller's): a peer that serves it gets a delegation naming
        the principal's token, never the token, and usage counts it under its subject.
        None: the node acts for itself (anonymous to peers). Authorising the principal
        for this node's own engine is the caller's job (the API does it per route).

        Raises:
            NoRoute: no node can serve the model (``reasons`` per candidate).
            InferenceRejected: a refusal that retrying elsewhere cannot fix; code
                unauthorized / forbidden / rate_limited when every replica that could
                serve it refused this principal.
        """
        return self.router.open(req, session=session, principal=principal)

    def mesh_models(self) -> dict[str, list[Candidate]]:
        """Every model served anywhere in the mesh, with the nodes that serve it."""
        return self.router.known_models()

    async def embed(self, model: str, inputs: Sequence[str], *,
                    principal: Principal | None = None) -> PlacedEmbeddings:
        """One vector per input (in order) from ``model``, wherever in the mesh it is
        served, with the tokens read and who computed them.

        Placed like a generation (ranking, breakers, failover to another replica before
        the answer); ``principal`` as in :meth:`open_generation`.

        Raises:
            NoRoute: no node can serve the model (``reasons`` per candidate).
            InferenceRejected: a refusal that retrying elsewhere cannot fix (a batch
                over the protocol's limits: ``too_large``), or every replica's refusal
                of this principal.
        """
        return await self.router.embed(model, inputs, principal=principal)

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

    async def delete_model(self, model_id: str, *, cancel: bool = False) -> bool:
        """Stop serving ``model_id`` here (its running requests finish first, or are
        ended with ``cancel``) and delete its file if it was pulled; True when a file was
        deleted (a --model or models.yaml file is never deleted, only unregistered).

        Raises:
            ModelNotFound: this node does not serve it.
        """
        if self.installer is None:
            raise ModelNotFound(model_id)
        return await self.installer.remove(model_id, cancel=cancel) is not None

    def set_replicas(self, model_id: str, replicas: int) -> Json:
        """Ask the mesh to keep ``replicas`` copies of ``model_id``, served here
        (protocols/replication.md); advertised at once, kept over restarts.

        Raises:
            ModelNotFound: this node does not serve it. ValueError: a bad count.
            OSError: the data dir cannot be written.
        """
        if self.replicator is None or self.engine is None:
            raise ModelNotFound(model_id)
        st = self.engine.registry.status(model_id)
        self.replicator.set_replicas(st.id, replicas)
        view = self.replicator.view(st.digest) if st.digest else None
        return {"model": st.id, "replicas": replicas, "digest": st.digest,
                "holders": sorted(view.holders) if view else []}

    # -- finding others --------------------------------------------------------------

    async def find_by_name(self, name: str) -> NameLookup | None:
        """Resolve a friendly name through the registry, then the DHT's signed records."""
        return await self.membership.find_by_name(name)

    async def find_providers(self, model: str) -> list[tuple[str, list[str]]]:
        return await self.membership.find_providers(model)


def _sampling(params: dict[str, Any]) -> dict[str, Any]:
    if "stop" in params and isinstance(params["stop"], list | str):
        stop = params["stop"]
        params = {**params, "stop": (stop,) if isinstance(stop, str) else tuple(stop)}
    return params


def model_specs(cfg: NodeConfig) -> list[ModelSpec]:
    """The models this node serves: the bundled default, --model files or ids, models.yaml.

    A bad --model entry is logged and skipped so the others still serve; a bad
    models.yaml stops the node (ConfigError names the key).
    """
    inference = cfg.inference
    catalog = build_catalog(serve_default=cfg.models.serve_default, paths=cfg.models.paths,
                            models_dir=inference.models_dir)
    return node_specs(catalog=catalog, models_yaml=inference.models_config_path,
                      models_dir=inference.models_dir, context_size=inference.context_size,
                      gpu_layers=inference.gpu_layers)


@asynccontextmanager
async def open_node(config: NodeConfig | None = None, *,
                    backend: ModelBackend | None = None) -> AsyncIterator[Node]:
    """Run a full PeerLLM node inside the caller's trio program.

    The node is listening and announcing when the block is entered; leaving the block
    shuts it all down (models are freed). Serve its HTTP API with
    ``peerllm.api.open_api(node)`` if you want one. The environment is not read: with
    ``config.data_dir`` None the data dir is the platform default
    (``peerllm.identity.default_data_dir()``); pass ``data_dir=default_data_dir(os.environ)``,
    or build the config with ``peerllm.config.load_config(environ=os.environ)``, to honour
    the variables. ``backend`` is the model runtime (None: llama.cpp); tests pass
    ``peerllm.testing.FakeBackend()``.

    Raises:
        IdentityError: the key, issuer key or identity file is corrupt or unreadable.
        ConfigError: a setting is unusable (e.g. a bad models.yaml, or a network key
            file that is gone or no longer holds a key).
    """
    cfg = config or NodeConfig()
    network_key = cfg.p2p.resolve_network_key()  # a bad key file stops us before any I/O
    data_dir = cfg.data_dir or default_data_dir()
    identity = load_identity(data_dir, name=cfg.node.name, node_id=cfg.node.id,
                             location=cfg.node.location, tags=cfg.node.tags)
    specs = model_specs(cfg)
    store = ModelStore(models_root(cfg, data_dir))
    specs += stored_specs(store, taken={spec.id for spec in specs},
                          context_size=cfg.inference.context_size,
                          gpu_layers=cfg.inference.gpu_layers)
    replica_settings = ReplicaSettings(data_dir / SETTINGS_FILE)  # ConfigError if corrupt
    authority = Authority(data_dir=data_dir, config=cfg.auth)
    # Honour the revocations kept on disk before anything is served.
    authority.revocations.rescan(now=time.time())
    try:
        async with AsyncExitStack() as stack:
            audit: AuditSink = stack.enter_context(open_audit_log(
                data_dir / AUDIT_FILE, node=identity.peer_id, max_bytes=cfg.audit.max_bytes,
                backups=cfg.audit.backups, rate_per_s=cfg.audit.lines_per_s)) \
                if cfg.audit.enabled else NULL_AUDIT
            # Always a registry, empty or not: a pulled model joins it while we run.
            registry = await stack.enter_async_context(
                open_registry(specs, config=cfg.inference, backend=backend))
            registry.replica_target = replica_settings.replicas  # outranks models.yaml
            host = await stack.enter_async_context(open_host(
                identity, listen=cfg.p2p.listen, announce=cfg.p2p.announce,
                network_key=network_key, dial_timeout_s=cfg.p2p.dial_timeout_s,
                max_peers=cfg.p2p.max_peers, audit=audit, relay_limits=HopLimits(
                    max_reservations=cfg.p2p.relay_max_reservations,
                    max_circuits=cfg.p2p.relay_max_circuits,
                    reservation_ttl_s=cfg.p2p.relay_reservation_ttl_s,
                    circuit_duration_s=cfg.p2p.relay_circuit_duration_s,
                    circuit_bytes=cfg.p2p.relay_circuit_bytes)))
            dht: Dht | None = await stack.enter_async_context(
                open_dht(host, identity, audit=audit)) if cfg.discovery.dht else None
            if cfg.p2p.hole_punch:  # DCUtR (protocols/dcutr.md): relayed -> direct
                # Outside the node's nursery: the service's teardown awaits, and inside a
                # cancelled scope its Cancelled would replace the caller's exception.
                await stack.enter_async_context(open_hole_punch(host))
            nursery = await stack.enter_async_context(trio.open_nursery())
            node = _compose(cfg, data_dir, identity, host, dht, Engine(registry), authority,
                            audit)
            models = build_distribution(
                config=cfg, data_dir=data_dir, host=host, peers=node.registry,
                membership=node.membership, authority=authority,
                registry=lambda: node.engine.registry if node.engine is not None else None,
                store=store, digests=node.digests,
                http=await stack.enter_async_context(open_http()),
                on_limited=_on_peer_limited(node.metrics, audit))
            node.store, node.pulls = store, models.pulls
            node.blob_server, node.installer = models.blob_server, models.installer
            host.set_handler(wb.PROTOCOL_ID, models.blob_server.handle)
            host.set_handler(wi.PROTOCOL_ID, node.infer_server.handle)
            host.set_handler(we.PROTOCOL_ID, node.embed_server.handle)
            host.set_handler(wni.PROTOCOL_ID, _info_handler(node.local, node.info_rate))
            host.set_handler(wrev.PROTOCOL_ID, RevocationServer(node.gossip.on_records).handle,
                             timeout_s=REVOCATION_PUSH_S)
            # Reachability (protocols/autonat.md): dial peers back when they ask, ask
            # them to dial us back; the one state the relay parts read.
            serve_dial_backs(host, max_peers=cfg.p2p.max_peers)
            # Peers that connected while the handlers were being set saw none of them.
            nursery.start_soon(host.push_identify)
            await nursery.start(ReachabilityProber(host, node.reachability).run)
            await nursery.start(node.gossip.run)  # before any connection: it hears them all
            await nursery.start(node.membership.run)
            await nursery.start(models.pulls.run)
            node.replicator = build_replicator(
                own_info=node.local.node_info, self_peer_id=node.peer_id, peers=node.registry,
                pulls=models.pulls, settings=replica_settings, disk_free=store.free_bytes,
                config=cfg.models)
            await nursery.start(node.replicator.run)
            if host.relay is not None:  # circuit relay v2 (protocols/relay.md)
                await nursery.start(partial(run_relay_service, host.relay,
                                            mode=cfg.p2p.relay_service,
                                            reachability=node.reachability, dht=dht))
                node.relays = ReservationKeeper(
                    host=host, relay=host.relay, reachability=node.reachability,
                    relays=cfg.p2p.relays, bootstrap=cfg.p2p.bootstrap, dht=dht,
                    on_change=node.membership.announce)
                await nursery.start(node.relays.run)
            # One digest cache (and its fallback folder) for the digest task and the
            # blob catalog: a pulled file's manifest, cached at install, is not re-read.
            nursery.start_soon(partial(keep_digests, registry, models.cache,
                                       on_change=node.membership.announce,
                                       digests=node.digests))
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The caller's own exception passed through our nursery: give it back as itself
        # (``except PeerLLMError`` must work around ``async with open_node``).
        reraise_unwrapped(group)


def _compose(cfg: NodeConfig, data_dir: Path, identity: Identity, host: P2PHost,
             dht: Dht | None, engine: Engine | None, authority: Authority,
             audit: AuditSink) -> Node:
    """Build the mesh objects over their ports (no task starts here)."""
    p2p = cfg.p2p
    credentials = NodeCredentials(node_key=identity.private_key, peer_id=host.peer_id,
                                  issuer_key=authority.issuer_key)
    usage = UsageLedger(data_dir / USAGE_DIR)
    gossip = RevocationGossip(book=authority.revocations, trusted=authority.trusted,
                              opener=host, links=host, audit=audit)
    local = LocalNode(identity=identity, peer_id=host.peer_id, engine=engine, addrs=host.addrs,
                      private_network=host.network_key.key is not None)
    registry = PeerRegistry(host.peer_id, stale_after_s=p2p.peer_stale_s,
                            max_peers=p2p.max_peers)
    breakers = BreakerBook(breaker_config(cfg.scheduling), registry,
                           self_peer_id=host.peer_id, clock=trio.current_time)
    membership = Membership(
        local=local, host=host, dht=dht, registry=registry,
        info_client=NodeInfoClient(host, call_timeout_s=p2p.call_timeout_s, audit=audit),
        known_peers=KnownPeers(data_dir / "known_peers.json",
                               limit=cfg.discovery.known_peers_max),
        p2p=p2p, discovery=cfg.discovery, on_peer_down=breakers.peer_down,
        on_peer_connected=gossip.peer_connected)
    # Per-peer limits of the libp2p side, whatever the peer (protocols/*.md "limits").
    # Only ids the mesh serves get a model label (the router is built below).
    metrics = Metrics(serves=lambda model: router.serves(model))
    subjects = SubjectNotes()
    forwarded = ForwardedRequests(authority=authority, credentials=credentials, usage=usage,
                                  serve_peers=p2p.serve_peers, trusted_peers=p2p.trusted_peers)
    infer_server = InferServer(
        self_peer_id=host.peer_id, load=local.load,
        generate=audit_served(serve_generator(local, local.model_ids, forwarded=forwarded,
                                              subjects=subjects),
                              audit, served_by=host.peer_id, subjects=subjects),
        max_streams_per_peer=p2p.max_streams_per_peer,
        stream_rate=PeerRate(p2p.peer_streams_per_s, max_peers=p2p.max_peers),
        on_limited=_on_peer_limited(metrics, audit))
    # Embed streams get the infer streams' per-peer limits, with counters of their own.
    embed_server = EmbedServer(
        self_peer_id=host.peer_id,
        embed=serve_embedder(local, local.model_ids, forwarded=forwarded, audit=audit),
        max_streams_per_peer=p2p.max_streams_per_peer,
        stream_rate=PeerRate(p2p.peer_streams_per_s, max_peers=p2p.max_peers),
        on_limited=_on_peer_limited(metrics, audit))
    info_rate = PeerRate(p2p.peer_info_requests_per_s, max_peers=p2p.max_peers)
    infer_client = InferClient(host, accept_timeout_s=max(p2p.call_timeout_s, 30.0),
                               max_idle_per_peer=p2p.infer_idle_streams_per_peer)
    router = Router(
        local=local, registry=registry, breakers=breakers, transport=infer_client,
        links=host, hooks=membership, settings=cfg.scheduling,
        policy=Policy(protocol=wi.PROTOCOL_ID, breaker=breakers.config,
                      max_info_age_s=p2p.heartbeat_interval_s * (p2p.heartbeat_misses + 1)),
        accounting=Accounting(credentials=credentials, usage=usage),
        embed_transport=EmbedClient(host))
    return Node(config=cfg, data_dir=data_dir, local=local, host=host, registry=registry,
                membership=membership, router=router, authority=authority,
                credentials=credentials, usage=usage, gossip=gossip, infer_server=infer_server,
                embed_server=embed_server, infer_client=infer_client,
                info_rate=info_rate, metrics=metrics, audit=audit)


def _on_peer_limited(metrics: Metrics, audit: AuditSink) -> PeerLimitHook:
    """What p2p/ calls when a per-peer limit refuses a peer: a metric and an audit line."""

    def hook(peer: str, limit: PeerLimit) -> None:
        metrics.observe_peer_limited(limit)
        audit_events.peer_limit(audit, peer=peer, limit=limit)

    return hook


def _info_handler(local: LocalNode, rate: PeerRate) -> Any:
    async def handler(stream: Any) -> None:
        await serve_node_info(stream, identity=local.identity, current_info=local.node_info,
                              rate=rate)

    return handler
