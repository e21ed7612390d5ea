"""The peer registry: one merged view per peer of everything discovery and node-info said.

Pure state: no I/O, and every method that depends on time takes ``now`` (wall-clock
seconds) so tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from ..wire.nodeinfo import NodeInfo


class Source(StrEnum):
    """How we learned about a peer."""

    BOOTSTRAP = "bootstrap"
    MDNS = "mdns"
    DHT = "dht"
    CACHE = "cache"
    INBOUND = "inbound"


class PeerState(StrEnum):
    """Whether a peer is usable right now; every state but HEALTHY comes with a reason."""

    CONNECTING = "connecting"
    HEALTHY = "healthy"
    STALE = "stale"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    INCOMPATIBLE = "incompatible"
    LIBP2P = "libp2p"
    """A plain libp2p peer: connected, answers identify, does not speak node-info. Kept
    (it may be a DHT peer, a bootstrap peer, a relay), never a scheduling candidate."""


@dataclass(frozen=True, slots=True)
class Link:
    """One open connection to a peer: its transport address and relay (None: direct)."""

    addr: str | None
    relay: str | None = None


@dataclass
class PeerEntry:
    peer_id: str
    addrs: list[str] = field(default_factory=list)
    sources: set[Source] = field(default_factory=set)
    info: NodeInfo | None = None
    info_received_at: float | None = None
    rtt_ms: float | None = None
    first_seen: float = 0.0
    last_seen: float | None = None
    state: PeerState = PeerState.CONNECTING
    reason: str | None = None
    consecutive_failures: int = 0
    boot_nonces: dict[bytes, float] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    agent: str | None = None
    """Its identify agent version, once asked (plain libp2p peers)."""
    protocols: tuple[str, ...] = ()
    """The protocols its identify listed, once asked (plain libp2p peers)."""
    links: list[Link] = field(default_factory=list)
    """Its open connections (usually one; two while a hole punch replaces a relay)."""

    @property
    def name(self) -> str | None:
        return self.info.name if self.info else None

    @property
    def connected(self) -> bool:
        return bool(self.links)

    @property
    def relay(self) -> str | None:
        """The relay's peer ID while every connection to it is relayed; None = direct
        (or not connected)."""
        if not self.links or any(link.relay is None for link in self.links):
            return None
        return self.links[0].relay


# A second boot nonce for the same peer ID within this window means two live
# processes hold the same key (a cloned identity), not a restart.
CLONE_WINDOW_S = 60.0


class PeerRegistry:
    """All peers we know of, keyed by peer ID; never contains ourselves."""

    def __init__(self, self_peer_id: str, *, stale_after_s: float, max_peers: int) -> None:
        self.self_peer_id = self_peer_id
        self.stale_after_s = stale_after_s
        self.max_peers = max_peers
        self._peers: dict[str, PeerEntry] = {}
        # Connections to peers not listed yet (the DHT or a relay keeper dialled them):
        # adopted when the peer is listed, so it does not look disconnected then.
        self._unlisted: dict[str, list[Link]] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, peer_id: str) -> PeerEntry | None:
        return self._peers.get(peer_id)

    def entries(self) -> list[PeerEntry]:
        return list(self._peers.values())

    def saw(self, peer_id: str, source: Source, *, now: float,
            addrs: Iterable[str] = ()) -> PeerEntry | None:
        """Record that ``source`` told us about ``peer_id``; None if it is us or we are full."""
        if peer_id == self.self_peer_id:
            return None
        entry = self._peers.get(peer_id)
        if entry is None:
            if len(self._peers) >= self.max_peers and not self._evict_one():
                return None
            entry = PeerEntry(peer_id=peer_id, first_seen=now,
                              links=self._unlisted.pop(peer_id, []))
            self._peers[peer_id] = entry
        entry.sources.add(source)
        for a in addrs:
            if a not in entry.addrs:
                entry.addrs.append(a)
        del entry.addrs[:-16]  # keep the newest few; a peer can advertise junk
        return entry

    def _evict_one(self) -> bool:
        dead = [e for e in self._peers.values()
                if e.state in (PeerState.UNREACHABLE, PeerState.REFUSED, PeerState.LIBP2P)
                and not e.connected]
        if not dead:
            return False
        victim = min(dead, key=lambda e: e.last_seen or e.first_seen)
        del self._peers[victim.peer_id]
        return True

    def connection_opened(self, peer_id: str, link: Link, *, now: float) -> None:
        if peer_id == self.self_peer_id:
            return
        entry = self._peers.get(peer_id)
        if entry is None:
            if peer_id not in self._unlisted and len(self._unlisted) >= self.max_peers:
                del self._unlisted[next(iter(self._unlisted))]  # the oldest
            self._unlisted.setdefault(peer_id, []).append(link)
            return
        entry.links.append(link)
        entry.last_seen = now

    def connection_closed(self, peer_id: str, link: Link) -> None:
        """One connection closed; the others (a direct one that replaced a relayed one)
        stay."""
        entry = self._peers.get(peer_id)
        links = entry.links if entry is not None else self._unlisted.get(peer_id, [])
        if link in links:
            links.remove(link)
        elif links:
            # Its address was unreadable on one side of the event pair: drop the oldest.
            del links[0]
        if entry is None and not links:
            self._unlisted.pop(peer_id, None)

    def info_received(self, peer_id: str, info: NodeInfo, *, rtt_ms: float, now: float,
                      compatible_version: int) -> PeerEntry | None:
        entry = self._peers.get(peer_id)
        if entry is None:
            return None
        if entry.info is not None and info.boot_nonce == entry.info.boot_nonce \
                and info.seq < entry.info.seq:
            return entry  # an older answer overtaken by a newer one
        for nonce, seen in list(entry.boot_nonces.items()):
            if now - seen > CLONE_WINDOW_S:
                del entry.boot_nonces[nonce]
        previous = entry.info.boot_nonce if entry.info is not None else None
        if previous is not None and info.boot_nonce != previous \
                and info.boot_nonce in entry.boot_nonces:
            # A restart replaces the nonce for good; answers that flip back to a nonce we
            # saw moments ago come from two live processes holding one key.
            msg = "cloned identity: two live processes answer for this peer ID"
            if msg not in entry.conflicts:
                entry.conflicts.append(msg)
        entry.boot_nonces[info.boot_nonce] = now
        entry.info = info
        entry.info_received_at = now
        entry.rtt_ms = rtt_ms if entry.rtt_ms is None else 0.7 * entry.rtt_ms + 0.3 * rtt_ms
        entry.last_seen = now
        entry.consecutive_failures = 0
        if info.protocol_version != compatible_version:
            entry.state = PeerState.INCOMPATIBLE
            entry.reason = (f"node-info protocol version {info.protocol_version}, "
                            f"we speak {compatible_version}")
        else:
            entry.state = PeerState.HEALTHY
            entry.reason = None
        return entry

    def plain_peer(self, peer_id: str, *, agent: str | None, protocols: tuple[str, ...],
                   now: float) -> PeerEntry | None:
        """``peer_id`` answered identify without /peerllm/node-info/1.0.0: a plain libp2p
        peer. Whatever node-info it gave before is forgotten, so nothing routes to it."""
        entry = self._peers.get(peer_id)
        if entry is None:
            return None
        entry.state = PeerState.LIBP2P
        entry.reason = "does not speak /peerllm/node-info/1.0.0"
        entry.agent = agent
        entry.protocols = protocols
        entry.info = None
        entry.info_received_at = None
        entry.consecutive_failures = 0
        entry.last_seen = now
        return entry

    def failed(self, peer_id: str, reason: str, *, now: float, refused: bool = False,
               max_misses: int = 2) -> PeerEntry | None:
        entry = self._peers.get(peer_id)
        if entry is None:
            return None
        entry.consecutive_failures += 1
        entry.reason = reason
        if refused:
            entry.state = PeerState.REFUSED
        elif entry.consecutive_failures >= max_misses or entry.info is None:
            entry.state = PeerState.UNREACHABLE
        else:
            entry.state = PeerState.STALE
        return entry

    def refresh_states(self, *, now: float) -> None:
        """Mark peers whose info is older than ``stale_after_s`` as stale."""
        for e in self._peers.values():
            if e.state is PeerState.HEALTHY and e.info_received_at is not None \
                    and now - e.info_received_at > self.stale_after_s:
                e.state = PeerState.STALE
                e.reason = f"no node-info for {now - e.info_received_at:.0f} s"

    def note_name_conflict(self, peer_id: str, message: str) -> None:
        entry = self._peers.get(peer_id)
        if entry is not None and message not in entry.conflicts:
            entry.conflicts.append(message)

    def by_name(self, name: str) -> list[PeerEntry]:
        return [e for e in self._peers.values() if e.info is not None and e.info.name == name]
