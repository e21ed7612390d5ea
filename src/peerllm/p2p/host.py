"""The libp2p host, built safe: Noise only, Yamux, checked TCP, one connection per peer.

py-libp2p 0.8.1's defaults are unsafe (plaintext accepted, a handler exception kills
the host, ~250 ms per dial, no timeouts); this module is the one place that knows
and works around that (see shared/notes/py-libp2p-0.8.1.md).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import multiaddr
import psutil
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee, IRawConnection
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity.identify import identify as libp2p_identify
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from .._version import __version__
from ..audit import NULL_AUDIT, AuditSink
from ..errors import NetworkKeyMismatch, PeerError, PeerTimeout, PeerUnavailable
from ..identity import Identity, to_libp2p_keypair
from .hop import HopLimits
from .pnet import NetworkKey
from .relay import Relay, is_circuit, open_relay, split_circuit
from .streams import ByteStream, Libp2pStream, StreamHandler, release_credit_in_halves, safe_handler
from .transport import NetworkTCP, protect

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound=BaseException)

# With circuit addresses known for a peer, its direct addresses get this long before we
# go through a relay (a NATed peer's direct addresses usually just time out).
DIRECT_BEFORE_RELAY_S = 1.5

AGENT_NAME = "peerllm"
AGENT_VERSION = f"{AGENT_NAME}/{__version__}"
"""What identify tells other libp2p peers we are."""


def name_our_agent() -> None:
    """Make identify announce ``AGENT_VERSION``: py-libp2p reads the module attribute
    ``identify.AGENT_VERSION`` each time it answers, and defaults it to its own name."""
    libp2p_identify.AGENT_VERSION = AGENT_VERSION


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A connection to ``peer_id`` opened or closed; ``inbound`` says who dialled;
    ``relay`` is the relay's peer ID when the connection runs through a circuit relay
    (None: direct)."""

    kind: Literal["connected", "disconnected"]
    peer_id: str
    inbound: bool
    addr: str | None
    relay: str | None = None


def relay_of(addr: str | None) -> str | None:
    """The relay peer ID of a ``.../p2p/<relay>/p2p-circuit/...`` address, else None."""
    if not addr or "/p2p-circuit" not in addr:
        return None
    head = addr.split("/p2p-circuit", 1)[0]
    _, sep, relay = head.rpartition("/p2p/")
    return relay if sep and relay else None


def route_libp2p_logging() -> None:
    """Make py-libp2p log through the application's handlers, and less noisily.

    ``import libp2p`` sets ``propagate=False`` with no handler, so its warnings bypass
    our logging config; the DHT logs a warning for nearly every normal request.
    """
    lib = logging.getLogger("libp2p")
    lib.propagate = True
    lib.handlers.clear()
    if lib.level == logging.NOTSET or lib.level < logging.WARNING:
        lib.setLevel(logging.WARNING)
    for noisy in ("libp2p.kad_dht", "libp2p.host.basic_host", "libp2p.identity",
                  "libp2p.network.swarm", "libp2p.transport", "libp2p.network.auto_connector"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for name in _ROUTINE_ERRORS:
        logger_ = logging.getLogger(name)
        if not any(isinstance(f, _Routine) for f in logger_.filters):
            logger_.addFilter(_Routine(_ROUTINE_ERRORS[name]))


# Messages py-libp2p logs at ERROR for routine events: a peer that left (we log that
# ourselves, naming the peer, as "cannot reach ..."), a DHT bookkeeping miss, or a
# protocol a peer does not speak (a plain libp2p peer answering "na": 7 lines each).
_ROUTINE_ERRORS = {
    # ...and a hole-punch dial from our listen port (DCUtR logs its outcome itself).
    "libp2p.transport.tcp.tcp": ("Failed to open TCP stream",
                                 "Unexpected error opening TCP stream"),
    "libp2p.host.basic_host": ("Failed to open stream to peer",),
    "libp2p.kad_dht.utils": ("Failed to update the Certified-Addr-Book",),
    # A relay client closing its hop stream after the exchange (every reservation).
    "libp2p.relay.circuit_v2.protocol": ("Error reading from hop stream",
                                         "Unexpected error handling hop stream",
                                         "Error sending status message"),
    # A failed handshake reaches our caller as PeerUnavailable / NetworkKeyMismatch
    # naming the peer (and a refused network key was a WARNING in p2p/transport.py);
    # an AutoNAT dial-back (p2p/dialback.py) closes after the Noise handshake.
    "libp2p.network.swarm": ("failed to upgrade security for peer", "fail to upgrade mux"),
    "libp2p.protocol_muxer.multiselect_client": ("MultiselectClient handshake",),
}


class _Routine(logging.Filter):
    """Lower the listed routine ERROR records to DEBUG (dropped unless debugging)."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self._prefixes):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class _ConnectionNotifee(INotifee):
    """Forwards connection events into a trio channel; never blocks the swarm."""

    def __init__(self, send: trio.MemorySendChannel[ConnectionEvent]) -> None:
        self._send = send

    def _emit(self, kind: Literal["connected", "disconnected"], conn: INetConn) -> None:
        try:
            peer = str(conn.muxed_conn.peer_id)
            inbound = not bool(getattr(conn.muxed_conn, "is_initiator", False))
            addrs = conn.get_transport_addresses()
            addr = str(addrs[0]) if addrs else None
        except Exception:  # a half-torn-down connection: nothing useful to report
            logger.debug("could not describe connection for %s event", kind, exc_info=True)
            return
        try:
            self._send.send_nowait(ConnectionEvent(kind, peer, inbound, addr, relay_of(addr)))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            logger.debug("dropped %s event for %s", kind, peer)

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._emit("connected", conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._emit("disconnected", conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


class P2PHost:
    """Our face of the libp2p host: timeouts on every dial and stream, safe handlers."""

    def __init__(self, host: IHost, *, dial_timeout_s: float, network_key: NetworkKey,
                 events: trio.MemoryReceiveChannel[ConnectionEvent],
                 relay: Relay | None = None) -> None:
        self.libp2p = host
        self.relay = relay  # circuit relay v2 (p2p/relay.py); None: relaying is off
        self.peer_id = str(host.get_id())
        self.network_key = network_key
        self.events = events
        self._dial_timeout_s = dial_timeout_s
        self._ips: dict[str, list[str]] | None = None
        # Dials in flight per peer: py-libp2p has no per-peer dial lock, and two
        # concurrent dials (the bootstrap loop and the relay keeper, say) open two
        # connections, one of which it drops without closing its socket.
        self._dialling: dict[str, trio.Event] = {}

    def addrs(self) -> list[str]:
        """Full multiaddrs others can dial (with /p2p/<peer-id>).

        A wildcard listen address (0.0.0.0 / ::) is not dialable, so it is expanded to
        this machine's interface addresses, non-loopback first.
        """
        out: list[str] = []
        for a in (str(x) for x in self.libp2p.get_addrs()):
            for wildcard, family in (("/ip4/0.0.0.0/", "ip4"), ("/ip6/::/", "ip6")):
                if a.startswith(wildcard):
                    rest = a[len(wildcard):]
                    out.extend(f"/{family}/{ip}/{rest}" for ip in self._local_ips(family))
                    break
            else:
                out.append(a)
        return list(dict.fromkeys(out))

    def _local_ips(self, family: str) -> list[str]:
        if self._ips is None:
            self._ips = _interface_ips()
        return self._ips.get(family, [])

    def connected_peers(self) -> list[str]:
        return [str(p) for p in self.libp2p.get_connected_peers()]

    def is_connected(self, peer_id: str) -> bool:
        return bool(self.libp2p.get_network().connections.get(ID.from_base58(peer_id)))

    def set_handler(self, protocol: str, handler: StreamHandler, *,
                    timeout_s: float | None = None) -> None:
        """Serve inbound ``protocol`` streams with ``handler`` (wrapped in safe_handler)."""
        safe = safe_handler(protocol, handler, timeout_s=timeout_s)

        async def on_stream(raw: INetStream) -> None:
            await safe(Libp2pStream(raw))

        self.libp2p.set_stream_handler(TProtocol(protocol), on_stream)

    def add_addrs(self, peer_id: str, addrs: Sequence[str], ttl_s: int = 3600) -> None:
        pid = ID.from_base58(peer_id)
        parsed = []
        for a in addrs:
            try:
                parsed.append(_strip_p2p(multiaddr.Multiaddr(a)))
            except Exception:  # a peer advertised junk; keep the rest
                logger.debug("ignoring unparsable address %r for %s", a, peer_id)
        if parsed:
            self.libp2p.get_peerstore().add_addrs(pid, parsed, ttl_s)

    async def connect(self, peer_id: str, addrs: Sequence[str] = ()) -> None:
        """Ensure a connection to ``peer_id`` (reusing an open one).

        Circuit addresses (``…/p2p/<relay>/p2p-circuit/p2p/<peer>``) are remembered and
        tried, in order, when the direct ones fail.

        Raises:
            NetworkKeyMismatch: the peer is in another private network.
            PeerTimeout: no connection within the dial timeout.
            PeerUnavailable: every address failed.
            RelayRefused: the last relay tried refused the circuit (status named).
        """
        if peer_id == self.peer_id:
            raise PeerUnavailable(peer_id, "refusing to dial ourselves")
        await self._one_dial(peer_id, partial(self._connect, peer_id, addrs))

    async def _one_dial(self, peer_id: str, dial: Callable[[], Awaitable[None]]) -> None:
        """``dial()`` unless connected, after any dial to ``peer_id`` in flight."""
        while (pending := self._dialling.get(peer_id)) is not None:
            await pending.wait()
        if self.is_connected(peer_id):
            return
        done = self._dialling[peer_id] = trio.Event()
        try:
            await dial()
        finally:
            del self._dialling[peer_id]
            done.set()

    async def _connect(self, peer_id: str, addrs: Sequence[str]) -> None:
        # Circuit addresses learnt elsewhere (identify, DHT lookups) sit in the peerstore,
        # where py-libp2p's swarm ignores them as "relay-only": hand them to the relay.
        circuits = self.relay.learn(peer_id, [*addrs, *self._stored_circuits(peer_id)]) \
            if self.relay is not None else []
        self.add_addrs(peer_id, [a for a in addrs if not is_circuit(a)], ttl_s=120)
        if not circuits:
            await self._dial_direct(peer_id, self._dial_timeout_s)
            return
        try:
            await self._dial_direct(peer_id, min(self._dial_timeout_s, DIRECT_BEFORE_RELAY_S))
        except NetworkKeyMismatch:
            raise
        except PeerError as exc:
            logger.debug("direct dial of %s failed (%s); trying its relays", peer_id, exc.message)
            await self._dial_circuits(peer_id, circuits)

    def _stored_circuits(self, peer_id: str) -> list[str]:
        try:
            stored = self.libp2p.get_peerstore().addrs(ID.from_base58(peer_id))
        except Exception:  # py-libp2p raises PeerStoreError for an unknown or expired peer
            return []
        return [str(a) for a in stored if is_circuit(str(a))]

    async def _dial_circuits(self, peer_id: str, circuits: Sequence[str]) -> None:
        assert self.relay is not None
        last: PeerError | None = None
        for addr in circuits:
            relay, relay_addrs, _ = split_circuit(addr)
            if relay == self.peer_id:
                continue
            try:
                # The relay itself is dialled directly (never a circuit through a circuit),
                # and waiting for another dial to it is bounded too (two peers that name
                # each other as relays would otherwise wait for each other).
                self.add_addrs(relay, relay_addrs, ttl_s=120)
                with trio.fail_after(self._dial_timeout_s):
                    await self._one_dial(relay, partial(self._dial_direct, relay,
                                                        self._dial_timeout_s))
                with trio.fail_after(self._dial_timeout_s):
                    await self.relay.dial(relay, peer_id)
                return
            except trio.TooSlowError:
                last = PeerTimeout(peer_id, f"no relayed connection via {relay} within "
                                            f"{self._dial_timeout_s} s", phase="dial")
            except PeerError as exc:
                mismatch = _find_cause(exc, NetworkKeyMismatch)
                if mismatch is not None:
                    raise NetworkKeyMismatch(peer_id, mismatch.message,
                                             suspected=mismatch.suspected) from exc
                last = exc
        raise last or PeerUnavailable(peer_id, "no usable circuit address")

    async def _dial_direct(self, peer_id: str, timeout_s: float) -> None:
        pid = ID.from_base58(peer_id)
        # py-libp2p refuses to redial a peer whose last dial failed for a while (its
        # "negative cache"); a restarted peer would stay unreachable. Our callers pace
        # their own redials with backoff, so every call here really dials.
        unblock = getattr(self.libp2p.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(pid)
        info = PeerInfo(pid, [])
        with trio.move_on_after(timeout_s) as scope:
            try:
                await self.libp2p.connect(info)
            except Exception as exc:
                mismatch = _find_cause(exc, NetworkKeyMismatch)
                if mismatch is not None:
                    raise NetworkKeyMismatch(peer_id, mismatch.message,
                                             suspected=mismatch.suspected) from exc
                raise PeerUnavailable(peer_id, f"dial failed: {_describe(exc)}") from exc
        if scope.cancelled_caught:
            raise PeerTimeout(peer_id, f"no connection within {timeout_s} s", phase="dial")

    async def connect_addr(self, addr: str) -> str:
        """Dial a full multiaddr ending in /p2p/<id>; return the peer ID."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        peer_id = str(info.peer_id)
        await self.connect(peer_id, [addr])
        return peer_id

    async def open_stream(self, peer_id: str, protocol: str) -> ByteStream:
        """Open a new stream (connecting first if needed) under the dial timeout.

        This makes P2PHost a ``streams.StreamOpener``.
        """
        await self.connect(peer_id)
        with trio.move_on_after(self._dial_timeout_s):
            try:
                raw = await self.libp2p.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
            except Exception as exc:
                raise PeerUnavailable(peer_id, f"cannot open {protocol}: {_describe(exc)}") from exc
            return Libp2pStream(raw, peer_id=peer_id)
        raise PeerTimeout(peer_id, f"{protocol} stream not open within {self._dial_timeout_s} s",
                          phase="open")

    async def push_identify(self) -> None:
        """Tell every connected peer our protocols again (identify push).

        The host listens before the node has registered all its handlers; a peer that
        connected in between holds an identify answer without them (and would take us
        for a plain libp2p peer). py-libp2p pushes only when listen addresses change.
        """
        with trio.move_on_after(self._dial_timeout_s):
            try:
                await self.libp2p._push_identify_to_all_peers()
            except Exception:  # best effort: a peer that missed it re-identifies anyway
                logger.debug("identify push failed", exc_info=True)

    async def disconnect(self, peer_id: str) -> None:
        with trio.move_on_after(2, shield=True):
            try:
                await self.libp2p.disconnect(ID.from_base58(peer_id))
            except Exception:  # already gone
                logger.debug("disconnect from %s raised", peer_id, exc_info=True)


def _no_blind_dials(host: IHost) -> None:
    """Switch py-libp2p's auto-connector off: it aims at the middle of [low_watermark,
    high_watermark] (not at low_watermark=0), so it kept dialling every peer in the
    peerstore — a relayed peer's direct addresses included — and a dial it had in flight
    when the host closed left its socket open. We decide whom to dial (membership)."""

    async def nothing() -> None:
        return None

    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        connector.maybe_connect = nothing


def _interface_ips() -> dict[str, list[str]]:
    """IPv4/IPv6 addresses of this machine's interfaces, loopback last."""
    out: dict[str, list[str]] = {"ip4": [], "ip6": []}
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET:
                out["ip4"].append(a.address)
            elif a.family == socket.AF_INET6 and not a.address.startswith("fe80"):
                out["ip6"].append(a.address.split("%")[0])
    for fam in out:
        out[fam].sort(key=lambda ip: ip.startswith("127.") or ip == "::1")
    return out


def _strip_p2p(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    try:
        return addr.decapsulate_code(multiaddr.protocols.P_P2P)
    except Exception:
        return addr


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, kind):
            return cur
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
        # libp2p's MultiError keeps the per-address failures in .errors, not as a cause.
        nested = getattr(cur, "errors", None)
        if isinstance(nested, (list, tuple)):
            todo.extend(e for e in nested if isinstance(e, BaseException))
        for nxt in (cur.__cause__, cur.__context__):
            if nxt is not None:
                todo.append(nxt)
    return None


def _describe(exc: BaseException) -> str:
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return f"{type(root).__name__}: {root}" if root is not exc else f"{type(exc).__name__}: {exc}"


@asynccontextmanager
async def open_host(identity: Identity, *, listen: Sequence[str], announce: Sequence[str] = (),
                    network_key: str | None = None, dial_timeout_s: float = 5.0,
                    max_peers: int = 200, audit: AuditSink = NULL_AUDIT,
                    relay_limits: HopLimits | None = None) -> AsyncIterator[P2PHost]:
    """Run a libp2p host for ``identity`` until the block exits (connections refused for
    another network key are written to ``audit``); with ``relay_limits`` it speaks
    circuit relay v2 (accepts and dials relayed connections; relays for others once
    told to).

    Raises:
        PeerLLMError subclasses are not raised here; a listen failure surfaces as
        OSError / libp2p's OpenConnectionError chained in a ``DiscoveryError``-free way
        so the CLI can name the address.
    """
    route_libp2p_logging()
    name_our_agent()
    key = NetworkKey.from_hex(network_key)
    keypair = to_libp2p_keypair(identity.private_key)
    listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
    conn_cfg = ConnectionConfig(
        max_connections_per_peer=1,      # >1 costs a fixed 250 ms per dial in 0.8.1
        max_connections=max(max_peers + 16, 32),
        min_connections=0,
        low_watermark=0,                 # we decide whom to dial; no blind auto-connect storms
        high_watermark=max_peers + 8,
        dial_timeout=dial_timeout_s,
        inbound_upgrade_timeout=max(dial_timeout_s, 5.0),
        outbound_upgrade_timeout=max(dial_timeout_s, 5.0),
    )
    host = new_host(
        key_pair=keypair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(
            keypair, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=listen_addrs,
        # The private network's pnet wrapping is ours (p2p/pnet.py), in the transport:
        # no psk= here, py-libp2p's own PSK speaks a cipher no other libp2p does.
        transports=[NetworkTCP(key, audit=audit)],
        connection_config=conn_cfg,
        announce_addrs=[multiaddr.Multiaddr(a) for a in announce] or None,
    )
    # A refusal for another network is final: 3 retries would only repeat it.
    host.get_network().retry_config = RetryConfig(max_retries=0)
    _no_blind_dials(host)
    release_credit_in_halves()  # one WINDOW_UPDATE per half window, not per read
    send, recv = trio.open_memory_channel[ConnectionEvent](1024)
    host.get_network().register_notifee(_ConnectionNotifee(send))
    async with send, recv, host.run(listen_addrs), AsyncExitStack() as stack:
        # A relayed connection is a raw connection like a TCP one: same pnet wrapping,
        # same first-bytes check (py-libp2p would wrap only the accepting side).
        def wrap(raw: IRawConnection, initiator: bool, peer: str) -> IRawConnection:
            return protect(raw, key, initiator=initiator, peer=peer, audit=audit)

        relay = await stack.enter_async_context(open_relay(host, relay_limits, protect=wrap)) \
            if relay_limits is not None else None
        p2p = P2PHost(host, dial_timeout_s=dial_timeout_s, network_key=key, events=recv,
                      relay=relay)
        logger.info("libp2p host %s listening on %s (network %s)", p2p.peer_id,
                    ", ".join(p2p.addrs()), key.describe())
        try:
            yield p2p
        finally:
            # host.run() stops the swarm service but leaves dialled sockets open.
            with trio.move_on_after(2, shield=True):
                async with trio.open_nursery() as nursery:
                    for peer in p2p.connected_peers():
                        nursery.start_soon(p2p.disconnect, peer)
