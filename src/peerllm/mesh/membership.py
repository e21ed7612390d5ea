"""Who is in the mesh: bootstrap, heartbeat, DHT maintenance, mDNS, redial, node-info.

``Membership.run`` owns one nursery with every membership loop; the router reaches it
only through the PeerHooks port (suspect a peer, refresh it after a request, discover a
model's providers). Every delay comes from the pure policy in scheduling.membership.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from ..config import DiscoveryConfig, P2PConfig
from ..errors import (
    DiscoveryError,
    NetworkKeyMismatch,
    PeerBusy,
    PeerConnectionLost,
    PeerError,
    PeerUnavailable,
    ProtocolError,
)
from ..p2p.dht import DHT_PROTOCOL_ID, Dht
from ..p2p.host import ConnectionEvent, P2PHost
from ..p2p.identify import host_identifier
from ..p2p.known_peers import KnownPeers
from ..p2p.mdns import Mdns, open_mdns
from ..p2p.nodeinfo import NodeInfoClient
from ..p2p.registry import Link, PeerRegistry, PeerState, Source
from ..scheduling.membership import dht_poll_period, redial_due
from ..scheduling.negative_cache import NegativeCache
from ..scheduling.pins import PIN_SEPARATOR
from ..wire import nodeinfo as wni
from .announcing import Announcer, mdns_announcement
from .bootstrapping import bootstrap_peer_id, keep_bootstrap
from .local import LocalNode
from .plain_peers import PeerIdentifier, PlainPeers

logger = logging.getLogger(__name__)

MAX_PROVIDERS_DIALLED = 8


@dataclass(frozen=True, kw_only=True)
class NameLookup:
    """Where a friendly name points, as found in the registry or the DHT."""

    name: str
    peer_id: str
    node_id: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]


class Membership:
    """Keeps the peer registry true: finds peers, fetches their node-info, drops the dead."""

    def __init__(self, *, local: LocalNode, host: P2PHost, dht: Dht | None,
                 registry: PeerRegistry, info_client: NodeInfoClient, known_peers: KnownPeers,
                 p2p: P2PConfig, discovery: DiscoveryConfig,
                 on_peer_down: Callable[[str], None],
                 on_peer_connected: Callable[[str], None] | None = None,
                 identifier: PeerIdentifier | None = None) -> None:
        self.local = local
        self.host = host
        self.dht = dht
        self.registry = registry
        self.info_client = info_client
        self.known_peers = known_peers
        self._p2p = p2p
        self._discovery = discovery
        self._on_peer_down = on_peer_down
        self._on_peer_connected = on_peer_connected  # every new connection, either way
        self.plain = PlainPeers(registry, identifier if identifier is not None
                                else host_identifier(host, timeout_s=p2p.call_timeout_s))
        # Peers a bootstrap loop redials itself (with its own backoff): not the heartbeat.
        self._bootstrap_peers = {bootstrap_peer_id(a) for a in p2p.bootstrap}
        # Dials in progress; a second caller waits for the first instead of failing.
        self._connecting: dict[str, trio.Event] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._started = 0.0
        # Models the DHT just said nobody provides: a stream of made-up ids costs one
        # lookup per id per TTL, not one per request.
        self.unknown_models = NegativeCache()
        self.announcer = Announcer(self._announce_now)
        self._mdns_live: Mdns | None = None

    # -- the loops ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run every membership loop until cancelled; started once mDNS is announcing."""
        self._started = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._on_connection_events, nursery)
                nursery.start_soon(self._heartbeat, nursery)
                if self._discovery.mdns:
                    await nursery.start(self._mdns)
                for peer_id, addrs in self.known_peers.load():
                    nursery.start_soon(self.connect_peer, peer_id, addrs, Source.CACHE)
                for addr in self._p2p.bootstrap:
                    nursery.start_soon(partial(
                        keep_bootstrap, addr, links=self.host, registry=self.registry,
                        meet=partial(self.connect_peer, source=Source.BOOTSTRAP),
                        joined=lambda: self._wake.set(),
                        watch_s=self._p2p.heartbeat_interval_s,
                        misses=self._p2p.heartbeat_misses))
                nursery.start_soon(self._dht_maintenance, nursery)
                nursery.start_soon(self.announcer.run)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.known_peers.save_if_dirty()
            with trio.move_on_after(1, shield=True):
                await self.info_client.aclose()

    async def _on_connection_events(self, nursery: trio.Nursery) -> None:
        async for ev in self.host.events:
            self._on_connection_event(ev, nursery)

    def _on_connection_event(self, ev: ConnectionEvent, nursery: trio.Nursery) -> None:
        now = time.time()
        link = Link(ev.addr, ev.relay)
        if ev.kind == "disconnected":
            self.registry.connection_closed(ev.peer_id, link)
            return
        if ev.inbound:
            self.registry.saw(ev.peer_id, Source.INBOUND, now=now)
        self.registry.connection_opened(ev.peer_id, link, now=now)
        if self._on_peer_connected is not None:
            self._on_peer_connected(ev.peer_id)
        if ev.peer_id not in self._connecting:
            nursery.start_soon(self._welcome, ev.peer_id)

    async def _welcome(self, peer_id: str) -> None:
        entry = self.registry.get(peer_id)
        # A peer we had written off that connects again (a restarted node dialling its
        # known peers) is asked at once, not at the next heartbeat: until then the router
        # would not send it anything.
        if entry is not None and (entry.info is None or entry.state is not PeerState.HEALTHY):
            await self.refresh_peer(peer_id)
        await self._join_dht(peer_id)

    async def _join_dht(self, peer_id: str) -> None:
        """Put ``peer_id`` in the DHT's table, unless it is a plain libp2p peer whose
        identify lacks our Kademlia protocol: every query would end in "na" there."""
        if self.dht is None:
            return
        entry = self.registry.get(peer_id)
        if entry is not None and entry.state is PeerState.LIBP2P \
                and DHT_PROTOCOL_ID not in entry.protocols:
            return
        await self.dht.add_peer(peer_id)

    async def _heartbeat(self, nursery: trio.Nursery) -> None:
        interval = self._p2p.heartbeat_interval_s
        while True:
            await trio.sleep(interval)
            now = time.time()
            for entry in self.registry.entries():
                if entry.peer_id in self._connecting:
                    continue
                if entry.connected or entry.state in (PeerState.HEALTHY, PeerState.STALE):
                    nursery.start_soon(self.refresh_peer, entry.peer_id)
                # A peer the DHT named has its addresses in the host's peerstore (and
                # its circuit addresses once it holds a relay slot), not in the entry.
                elif (entry.state is PeerState.UNREACHABLE or entry.retry_refused) \
                        and (entry.addrs or Source.DHT in entry.sources) \
                        and entry.peer_id not in self._bootstrap_peers and redial_due(
                        interval_s=interval, failures=entry.consecutive_failures,
                        since_last_s=now - (entry.last_seen or entry.first_seen)):
                    nursery.start_soon(self.connect_peer, entry.peer_id, entry.addrs,
                                       next(iter(entry.sources), Source.CACHE))
            self.registry.refresh_states(now=now)
            self.known_peers.save_if_dirty()

    async def _dht_maintenance(self, nursery: trio.Nursery) -> None:
        dht = self.dht
        if dht is None:
            return
        last_publish = last_local = -1e9
        while True:
            due = self._discovery.dht_republish_s
            if trio.current_time() - last_publish >= due and dht.routing_peers():
                last_publish = trio.current_time()
                nursery.start_soon(self._publish)
            elif trio.current_time() - last_local >= due and not dht.routing_peers():
                last_local = trio.current_time()
                self._store_local()
            await dht.refresh()
            for peer_id in dht.routing_peers():
                entry = self.registry.get(peer_id)
                # Unreachable and refused peers are redialled by the heartbeat, with
                # backoff; a plain libp2p peer is known for what it is.
                if entry is None or (entry.state is not PeerState.HEALTHY and not entry.connected
                                     and entry.state not in (PeerState.REFUSED,
                                                             PeerState.UNREACHABLE,
                                                             PeerState.LIBP2P)):
                    nursery.start_soon(self.connect_peer, peer_id, [], Source.DHT)
                elif Source.DHT not in entry.sources:
                    entry.sources.add(Source.DHT)
            with trio.move_on_after(dht_poll_period(
                    uptime_s=trio.current_time() - self._started)):
                await self._wake.wait()
            self._wake = trio.Event()

    def announce(self) -> None:
        """Our models (or their digests) changed: republish the DHT records and refresh
        mDNS soon, coalesced with other calls in the same burst (announcing.py)."""
        self.announcer.announce()

    async def _announce_now(self) -> None:
        if self.dht is not None and self.dht.routing_peers():
            await self._publish()
        elif self.dht is not None:
            self._store_local()
        if self._mdns_live is not None:
            try:
                await self._mdns_live.update(mdns_announcement(self.local))
            except DiscoveryError as exc:
                logger.warning("mDNS: could not refresh our record: %s", exc)

    def _store_local(self) -> None:
        if self.dht is not None:
            self.dht.store_local(addrs=self.local.addrs(),
                                 models=[m.id for m in self.local.model_statuses()],
                                 ttl_s=self._discovery.record_ttl_s)

    async def _publish(self) -> None:
        if self.dht is None:
            return
        name = self.local.name
        statuses = self.local.model_statuses()
        await self.dht.publish(addrs=self.local.addrs(), models=[m.id for m in statuses],
                               digests=sorted({m.digest for m in statuses if m.digest}),
                               ttl_s=self._discovery.record_ttl_s)
        claim = await self.dht.find_name(name)
        if claim is not None and claim.peer_id != self.local.peer_id:
            logger.warning("name %r is also claimed in the DHT by %s (node %s); "
                           "choose another --name to avoid confusion",
                           name, claim.peer_id, claim.node_id)
            self.registry.saw(claim.peer_id, Source.DHT, now=time.time())
            self.registry.note_name_conflict(claim.peer_id, f"also claims our name {name!r}")

    async def _mdns(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        ann = mdns_announcement(self.local)
        try:
            async with open_mdns(ann, interfaces=self._discovery.mdns_interfaces) as mdns:
                self._mdns_live = mdns
                task_status.started()
                try:
                    async with trio.open_nursery() as nursery:
                        async for peer in mdns.discovered():
                            nursery.start_soon(self.connect_peer, peer.peer_id,
                                               list(peer.addrs), Source.MDNS)
                finally:
                    self._mdns_live = None
        except DiscoveryError as exc:
            logger.error("mDNS discovery is off: %s", exc)
            task_status.started()

    # -- one peer ----------------------------------------------------------------------

    async def connect_peer(self, peer_id: str, addrs: list[str], source: Source) -> bool:
        """Note ``peer_id`` from ``source``, connect and fetch its node-info. True if healthy."""
        entry = self.registry.saw(peer_id, source, now=time.time(), addrs=addrs)
        if entry is None:
            return False
        pending = self._connecting.get(peer_id)
        if pending is not None:
            await pending.wait()
            return self._healthy(peer_id)
        done = self._connecting[peer_id] = trio.Event()
        try:
            await self.host.connect(peer_id, entry.addrs)
            await self.refresh_peer(peer_id)
            await self._join_dht(peer_id)
        except NetworkKeyMismatch as exc:
            logger.warning("peer %s is in another network: %s", peer_id, exc.message)
            self.registry.failed(peer_id, exc.message if exc.suspected else "network key differs",
                                 now=time.time(), refused=True, suspected=exc.suspected)
        except PeerError as exc:
            logger.info("cannot reach %s (%s): %s", peer_id, source.value, exc.message)
            self.registry.failed(peer_id, exc.message, now=time.time(),
                                 max_misses=self._p2p.heartbeat_misses)
        finally:
            del self._connecting[peer_id]
            done.set()
        return self._healthy(peer_id)

    def _healthy(self, peer_id: str) -> bool:
        e = self.registry.get(peer_id)
        return e is not None and e.state is PeerState.HEALTHY

    async def refresh_peer(self, peer_id: str) -> None:
        """Ask one peer for its node-info now and record the outcome (a plain libp2p
        peer is not asked: plain_peers.py)."""
        if await self.plain.is_plain(peer_id):
            return
        try:
            info, rtt_ms = await self.info_client.fetch(peer_id)
        except PeerBusy:
            # It answered: up, just over its node-info rate for us. Keep what it last said.
            logger.debug("peer %s is over its node-info rate; keeping its last info", peer_id)
            return
        except (PeerError, ProtocolError) as exc:
            # py-libp2p reports a refused protocol ("na") as a failed stream, like any
            # other: identify tells a plain libp2p peer from a broken PeerLLM node.
            if isinstance(exc, PeerUnavailable) and self.host.is_connected(peer_id) \
                    and await self.plain.classify(peer_id):
                return
            if isinstance(exc, PeerUnavailable | PeerConnectionLost) \
                    and not self.host.is_connected(peer_id):
                # Refused, or its connection dropped: it is gone (or cut off) until it
                # answers again.
                self._on_peer_down(peer_id)
            reason = exc.message if isinstance(exc, PeerError) else f"bad node-info: {exc}"
            entry = self.registry.failed(peer_id, reason, now=time.time(),
                                         refused=isinstance(exc, NetworkKeyMismatch),
                                         suspected=isinstance(exc, NetworkKeyMismatch)
                                         and exc.suspected,
                                         max_misses=self._p2p.heartbeat_misses)
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
            for m in info.models:  # served now: the next request for it asks the DHT again
                self.unknown_models.found(m.id)

    def _check_name(self, peer_id: str, name: str) -> None:
        """Flag two live keys answering to one friendly name (names are not unique by force)."""
        if name == self.local.name:
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

    # -- PeerHooks (for the router) -----------------------------------------------------

    def suspect_peer(self, peer_id: str) -> None:
        """A request to ``peer_id`` just failed: stop routing to it now, re-check it soon."""
        self.registry.failed(peer_id, "a request to it failed", now=time.time(),
                             max_misses=self._p2p.heartbeat_misses)
        if self._nursery is not None:
            self._nursery.start_soon(self.refresh_peer, peer_id)

    def after_remote_request(self, peer_id: str) -> None:
        """A request on ``peer_id`` finished: refresh its load now, not at the next beat."""
        if self._nursery is not None and peer_id != self.local.peer_id:
            self._nursery.start_soon(self.refresh_peer, peer_id)

    async def discover(self, model: str) -> None:
        """Nobody we can route to serves ``model``: redial the providers we know that
        dropped out, and only if none of them is back, ask the DHT and meet its answers.

        A replica that restarted moments ago is usually listening again long before our
        heartbeat (or its redial backoff) would look at it; a request with nowhere else to
        go should not be lost for that. A model the DHT had no provider for less than
        ``unknown_models.ttl_s`` ago is not asked for again (a peer whose node-info lists
        it is routed to without coming here). A pinned ``id@<digest prefix>`` looks for
        the providers of the id (the DHT does not know versions).
        """
        model = model.partition(PIN_SEPARATOR)[0]
        if await self._redial_providers(model):
            return
        if self.dht is None or self.unknown_models.missing(model, trio.current_time()):
            return
        providers = await self.find_providers(model)
        if not [p for p, _ in providers if p != self.local.peer_id]:
            self.unknown_models.note_missing(model, trio.current_time())
            return
        self.unknown_models.found(model)
        async with trio.open_nursery() as nursery:
            for peer_id, addrs in providers[:MAX_PROVIDERS_DIALLED]:
                if peer_id != self.local.peer_id:
                    nursery.start_soon(self.connect_peer, peer_id, addrs, Source.DHT)

    async def _redial_providers(self, model: str) -> bool:
        """Redial the known, not healthy, not refused peers that said they serve
        ``model``; True if one of them is healthy again."""
        dropped = [e for e in self.registry.entries()
                   if e.info is not None and e.state in (PeerState.UNREACHABLE, PeerState.STALE)
                   and any(m.id == model for m in e.info.models)][:MAX_PROVIDERS_DIALLED]
        back: list[bool] = []

        async def redial(peer_id: str, addrs: list[str], source: Source) -> None:
            back.append(await self.connect_peer(peer_id, addrs, source))

        async with trio.open_nursery() as nursery:
            for e in dropped:
                nursery.start_soon(redial, e.peer_id, list(e.addrs),
                                   next(iter(e.sources), Source.CACHE))
        return any(back)

    # -- lookups -----------------------------------------------------------------------

    async def find_providers(self, model: str) -> list[tuple[str, list[str]]]:
        if self.dht is None:
            return []
        return await self.dht.find_providers(model)

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

