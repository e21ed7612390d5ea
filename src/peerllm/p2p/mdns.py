"""LAN discovery over mDNS/DNS-SD: publish this node and report PeerLLM peers on the LAN.

python-zeroconf is thread-based and its calls block (``register_service`` ~1.7 s), so
every Zeroconf call from trio runs in ``trio.to_thread``. The ServiceBrowser calls our
handler on its own thread (not zeroconf's event-loop thread); the handler resolves the
service (normally from cache, at most 3 s), parses its TXT record and hands the peer to
trio with ``trio.from_thread.run_sync``. No background trio task is needed, so
``open_mdns`` owns no nursery and never wraps exceptions in an ExceptionGroup.

TXT record (each ``key=value`` string <= 255 bytes, all utf-8):
    peer_id   base58 libp2p peer id
    name      node name (the instance label is ``<name>-<peer_id[-8:]>``)
    models    comma-joined model ids; truncated to fit
    addrs     comma-joined full multiaddrs (ending in ``/p2p/<peer_id>``), or, when
              too long, split over ``addr0``, ``addr1``, ... (at most _MAX_ADDR_KEYS)

TXT data from the network is untrusted: a record that is not valid utf-8, lacks a key,
or has an out-of-range value drops that service (debug log), nothing more. A forged
record can only point at addresses ending in the claimed peer id, and the libp2p
handshake verifies that id when dialling.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import ifaddr
import trio
import zeroconf
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from ..errors import DiscoveryError

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_peerllm._tcp.local."

_MAX_TXT_ENTRY_BYTES = 255  # one TXT string is length-prefixed by a single byte
_MAX_ADDR_KEYS = 4  # addr0..addr3: keeps the whole TXT record near 1.4 KB
_MAX_NAME_BYTES = 63 - 9  # "<name>-<8 chars>" must fit one 63-byte DNS label
_MAX_PEER_ID_CHARS = 128
_PEER_ID_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")  # base58btc alphabet
_QUEUE_SIZE = 256  # discovered peers waiting for the consumer
_RESOLVE_TIMEOUT_MS = 3000
_CLOSE_TIMEOUT_S = 3.0


@dataclass(frozen=True, kw_only=True)
class MdnsAnnouncement:
    """What this node publishes.

    ``addrs`` are full multiaddrs ending in ``/p2p/<peer_id>``. ``port`` goes into the
    SRV record only (0 is allowed: peers dial ``addrs``). Models that cannot be
    published (a comma in the id, or past the 255-byte TXT limit) are left out with a
    warning; everything else that is unpublishable raises ValueError here.
    """

    peer_id: str
    name: str
    port: int
    addrs: tuple[str, ...]
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_peer_id(self.peer_id)
        _check_name(self.name)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        for addr in self.addrs:
            _check_addr(addr, self.peer_id)


@dataclass(frozen=True, kw_only=True)
class MdnsPeer:
    """A PeerLLM node seen on the LAN (possibly again, after its record changed)."""

    peer_id: str
    name: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]


class Mdns:
    """A running mDNS responder and browser; get one from :func:`open_mdns`."""

    def __init__(self, announcement: MdnsAnnouncement, *, interfaces: tuple[str, ...]) -> None:
        self._announcement = announcement
        self._interfaces = interfaces
        self._instance = instance_name(announcement)
        self._token = trio.lowlevel.current_trio_token()
        self._send, self._recv = trio.open_memory_channel[MdnsPeer](_QUEUE_SIZE)
        self._update_lock = trio.Lock()
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._ips: tuple[str, ...] = ()

    def discovered(self) -> trio.MemoryReceiveChannel[MdnsPeer]:
        """Peers seen on the LAN, never ourselves; a peer appears again when its record changes.

        One channel shared by all callers (single consumer). If nobody reads it, peers
        beyond the 256 buffered are dropped with a debug log. It ends when the
        ``open_mdns`` block exits. Removals are not reported: a peer that leaves is
        noticed by failed dials, as with any other discovery source.
        """
        return self._recv

    async def update(self, announcement: MdnsAnnouncement) -> None:
        """Re-publish our record, e.g. after the model list changed.

        ``peer_id`` and ``name`` must stay the same (they form the service name).

        Cancellation: not cancellable while zeroconf announces (~0.5 s), so the published
        record and ``self`` never disagree.

        Raises:
            ValueError: ``peer_id`` or ``name`` differs from the running announcement.
            DiscoveryError: zeroconf failed to send the update, or is closed.
        """
        if (announcement.peer_id, announcement.name) != (
            self._announcement.peer_id,
            self._announcement.name,
        ):
            raise ValueError("update() cannot change peer_id or name")
        info = _service_info(announcement, self._ips)
        async with self._update_lock:
            zc = self._zc
            if zc is None:
                raise DiscoveryError("mdns: update() after the responder was closed")
            try:
                await trio.to_thread.run_sync(zc.update_service, info)
            except (OSError, zeroconf.Error) as exc:
                raise DiscoveryError(f"mdns: update failed: {type(exc).__name__}: {exc}") from exc
            self._announcement, self._info = announcement, info

    # -- lifecycle (driven by open_mdns) ------------------------------------------------

    async def _start(self) -> None:
        try:
            zc, self._ips = await trio.to_thread.run_sync(_open_zeroconf, self._interfaces)
        except (OSError, zeroconf.Error) as exc:
            where = ", ".join(self._interfaces) or "all interfaces"
            raise DiscoveryError(
                f"mdns: cannot start on {where}: {type(exc).__name__}: {exc}"
            ) from exc
        self._zc = zc
        info = _service_info(self._announcement, self._ips)
        # Browse before registering: our own probing takes ~1.7 s, and peers that are
        # already up can be found (and queued) meanwhile.
        self._browser = await trio.to_thread.run_sync(self._open_browser, zc)
        try:
            await trio.to_thread.run_sync(zc.register_service, info)
        except (OSError, zeroconf.Error) as exc:
            raise DiscoveryError(
                f"mdns: cannot register {self._instance!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self._info = info
        logger.debug("mdns: registered %s on %s", self._instance, ", ".join(self._ips))

    async def _aclose(self) -> None:
        zc, browser, info = self._zc, self._browser, self._info
        self._zc = self._browser = self._info = None
        if zc is not None:
            # Bounded and shielded: shutdown must finish even when cancelled, and never
            # hang on zeroconf (the browser thread may sit in a 3 s resolve); an abandoned
            # thread only delays the goodbye packets.
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True) as scope:
                try:
                    await trio.to_thread.run_sync(
                        _close_zeroconf, zc, browser, info, abandon_on_cancel=True
                    )
                except (OSError, zeroconf.Error):
                    logger.warning("mdns: error while closing zeroconf", exc_info=True)
            if scope.cancelled_caught:
                logger.warning("mdns: zeroconf did not close within %.0f s", _CLOSE_TIMEOUT_S)
        self._send.close()
        self._recv.close()

    # -- discovery, on the ServiceBrowser thread ----------------------------------------

    def _open_browser(self, zc: Zeroconf) -> ServiceBrowser:
        return ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_state_change])

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # zeroconf calls this by keyword on the browser's own thread (not its event loop),
        # one event at a time, so an Updated is never overtaken by an older Added. An
        # exception here would kill that thread, so every expected one is caught.
        if state_change is ServiceStateChange.Removed or name.lower() == self._instance.lower():
            return
        peer = self._resolve(zeroconf, service_type, name)
        if peer is None:
            return
        try:
            trio.from_thread.run_sync(self._send.send_nowait, peer, trio_token=self._token)
        except trio.WouldBlock:
            logger.debug("mdns: discovered queue full, dropping %s", peer.peer_id)
        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.RunFinishedError):
            pass  # the open_mdns block (or the whole trio run) has ended

    def _resolve(self, zc: Zeroconf, service_type: str, name: str) -> MdnsPeer | None:
        # Answered from zeroconf's cache when the announcement carried SRV/TXT/A (the
        # usual case); otherwise this queries and waits up to _RESOLVE_TIMEOUT_MS.
        try:
            info = zc.get_service_info(service_type, name, timeout=_RESOLVE_TIMEOUT_MS)
        except zeroconf.Error as exc:  # a malformed name, or zeroconf closing under us
            logger.debug("mdns: cannot resolve %r: %s: %s", name, type(exc).__name__, exc)
            return None
        if info is None:
            logger.debug("mdns: %r did not resolve within %d ms", name, _RESOLVE_TIMEOUT_MS)
            return None
        try:
            peer = decode_txt(info.properties)
        except ValueError as exc:  # includes UnicodeDecodeError
            logger.debug("mdns: ignoring %r: %s", name, exc)
            return None
        if peer.peer_id == self._announcement.peer_id:
            return None  # our own record under another name (e.g. a restart's leftover)
        return peer


@asynccontextmanager
async def open_mdns(
    announcement: MdnsAnnouncement, *, interfaces: Sequence[str] = ()
) -> AsyncIterator[Mdns]:
    """Publish ``announcement`` over mDNS and browse for other PeerLLM nodes.

    Args:
        announcement: what to publish; see :meth:`Mdns.update` to change it later.
        interfaces: IPv4 addresses of the interfaces to use; ``()`` means all of them
            (then the host's non-loopback IPv4 addresses are published).

    Returns:
        An async context manager; the record is registered (probing and announcing
        take ~1.7 s, off the trio thread) when the block is entered, and unregistered
        when it exits. Peers found meanwhile are already queued in ``discovered()``.

    Raises:
        DiscoveryError: zeroconf could not start (an address that is not IPv4 or not
            on this host, sockets unavailable) or the service could not be registered.

    Cancellation: startup may take ~1.7 s to notice a cancel (zeroconf's register call
    cannot be interrupted). Exiting always unregisters and closes zeroconf, shielded but
    bounded to 3 s so shutdown never hangs.
    """
    mdns = Mdns(announcement, interfaces=_check_interfaces(interfaces))
    try:
        await mdns._start()
        yield mdns
    finally:
        await mdns._aclose()


# -- TXT encoding (pure) -------------------------------------------------------------------


def instance_name(announcement: MdnsAnnouncement) -> str:
    """The DNS-SD service instance name; unique per node even when names collide."""
    return f"{_label(announcement)}.{SERVICE_TYPE}"


def encode_txt(announcement: MdnsAnnouncement) -> dict[str, str]:
    """The TXT properties for ``announcement``, each ``key=value`` within 255 bytes."""
    props = {"peer_id": announcement.peer_id, "name": announcement.name}
    publishable = [m for m in announcement.models if m and "," not in m]
    models = _fit(publishable, _MAX_TXT_ENTRY_BYTES - len("models="))
    if len(models) < len(announcement.models):
        logger.warning(
            "mdns: advertising %d of %d models (255-byte TXT limit, or a comma in the id)",
            len(models),
            len(announcement.models),
        )
    props["models"] = ",".join(models)
    addrs = list(announcement.addrs)
    if _entry_len("addrs", ",".join(addrs)) <= _MAX_TXT_ENTRY_BYTES:
        props["addrs"] = ",".join(addrs)
        return props
    budget = _MAX_TXT_ENTRY_BYTES - len("addr0=")
    for i in range(_MAX_ADDR_KEYS):
        if not addrs:
            break
        chunk = _fit(addrs, budget)
        props[f"addr{i}"] = ",".join(chunk)
        addrs = addrs[len(chunk) :]
    if addrs:
        logger.warning("mdns: %d addresses do not fit in the TXT record", len(addrs))
    return props


def decode_txt(properties: Mapping[bytes, bytes | None]) -> MdnsPeer:
    """Parse TXT properties received from the network.

    Raises:
        ValueError: (including UnicodeDecodeError) the record is not a usable PeerLLM
            record; callers drop the service.
    """
    peer_id = _required(properties, "peer_id")
    _check_peer_id(peer_id)
    name = _required(properties, "name")
    _check_name(name)
    models = tuple(m for m in (_optional(properties, "models") or "").split(",") if m)
    parts = [_optional(properties, "addrs")]
    for i in range(_MAX_ADDR_KEYS):
        part = _optional(properties, f"addr{i}")
        if part is None:
            break
        parts.append(part)
    addrs = tuple(a for part in parts if part for a in part.split(",") if a)
    if not addrs:
        raise ValueError("no addrs")
    for addr in addrs:
        _check_addr(addr, peer_id)
    return MdnsPeer(peer_id=peer_id, name=name, addrs=addrs, models=models)


def _label(announcement: MdnsAnnouncement) -> str:
    return f"{announcement.name}-{announcement.peer_id[-8:]}"


def _entry_len(key: str, value: str) -> int:
    return len(key.encode()) + 1 + len(value.encode())


def _fit(items: Iterable[str], budget: int) -> list[str]:
    """The longest prefix of ``items`` whose comma-join is at most ``budget`` bytes."""
    out: list[str] = []
    used = -1  # no comma before the first item
    for item in items:
        used += 1 + len(item.encode())
        if used > budget:
            break
        out.append(item)
    return out


def _required(properties: Mapping[bytes, bytes | None], key: str) -> str:
    value = _optional(properties, key)
    if not value:
        raise ValueError(f"missing {key}")
    return value


def _optional(properties: Mapping[bytes, bytes | None], key: str) -> str | None:
    raw = properties.get(key.encode())
    return None if raw is None else raw.decode("utf-8")


def _check_peer_id(peer_id: str) -> None:
    if len(peer_id) > _MAX_PEER_ID_CHARS or not _PEER_ID_RE.fullmatch(peer_id):
        raise ValueError(f"peer_id {peer_id[:_MAX_PEER_ID_CHARS]!r} is not a base58 peer id")


def _check_name(name: str) -> None:
    if not name or len(name.encode()) > _MAX_NAME_BYTES or "." in name or not name.isprintable():
        raise ValueError(f"name {name[:80]!r}: need 1-{_MAX_NAME_BYTES} bytes, no '.'")


def _check_addr(addr: str, peer_id: str) -> None:
    ok = (
        addr.startswith("/")
        and addr.endswith(f"/p2p/{peer_id}")
        and addr.isascii()
        and addr.isprintable()
        and not any(c in addr for c in ", ")
        and _entry_len("addr0", addr) <= _MAX_TXT_ENTRY_BYTES
    )
    if not ok:
        raise ValueError(f"addr {addr[:300]!r} is not a multiaddr ending in /p2p/{peer_id}")


def _check_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    ips: list[str] = []
    for iface in interfaces:
        try:
            ip = ipaddress.IPv4Address(iface)
        except ValueError as exc:
            raise DiscoveryError(f"mdns: interface {iface!r} is not an IPv4 address") from exc
        if ip.is_unspecified or ip.is_multicast:
            raise DiscoveryError(f"mdns: interface {iface!r} is not a unicast address")
        ips.append(str(ip))
    return tuple(ips)


# -- zeroconf, blocking (called in worker threads) -------------------------------------


def _open_zeroconf(interfaces: tuple[str, ...]) -> tuple[Zeroconf, tuple[str, ...]]:
    """Start zeroconf; returns it and the IPv4 addresses to publish in A records."""
    for ip in interfaces:
        # Zeroconf() raises OSError for an address not on this host but leaks its
        # listening socket (ResourceWarning); a plain bind finds the problem cleanly.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    if interfaces:
        zc = Zeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
        return zc, interfaces
    zc = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    return zc, _host_ipv4s() or ("127.0.0.1",)


def _host_ipv4s() -> tuple[str, ...]:
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return tuple(dict.fromkeys(found))


def _service_info(announcement: MdnsAnnouncement, ips: tuple[str, ...]) -> ServiceInfo:
    label = _label(announcement)
    return ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=announcement.port,
        properties=encode_txt(announcement),
        server=f"{label}.local.",
        parsed_addresses=list(ips),
    )


def _close_zeroconf(zc: Zeroconf, browser: ServiceBrowser | None, info: ServiceInfo | None) -> None:
    try:
        if browser is not None:
            browser.cancel()
        if info is not None:
            zc.unregister_service(info)  # sends goodbye packets
    finally:
        zc.close()
