"""LAN discovery over mDNS/DNS-SD: publish this node and report PeerLLM peers on the LAN.

python-zeroconf is thread-based and its calls block (``register_service`` ~1.7 s), so
every Zeroconf call from trio runs in ``trio.to_thread``. The ServiceBrowser calls our
handler on its own thread (not zeroconf's event-loop thread); the handler resolves the
service (normally from cache, at most 3 s), parses its TXT record and hands the peer to
trio with ``trio.from_thread.run_sync``. No background trio task is needed, so
``open_mdns`` owns no nursery and never wraps exceptions in an ExceptionGroup.

The TXT record's format and its checks are the pure ``wire.mdns_txt`` codec; a record
that does not decode drops that service (debug log), nothing more.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

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
from ..wire.mdns_txt import MdnsAnnouncement as MdnsAnnouncement  # open_mdns takes it
from ..wire.mdns_txt import MdnsPeer as MdnsPeer  # discovered() yields it
from ..wire.mdns_txt import decode_txt, encode_txt, instance_label

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_peerllm._tcp.local."

_QUEUE_SIZE = 256  # discovered peers waiting for the consumer
_RESOLVE_TIMEOUT_MS = 3000
_CLOSE_TIMEOUT_S = 3.0


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


# -- naming ------------------------------------------------------------------------------


def instance_name(announcement: MdnsAnnouncement) -> str:
    """The DNS-SD service instance name; unique per node even when names collide."""
    return f"{instance_label(announcement)}.{SERVICE_TYPE}"


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
    label = instance_label(announcement)
    record = encode_txt(announcement)
    if record.models_left_out:
        logger.warning(
            "mdns: advertising %d of %d models (255-byte TXT limit, or a comma in the id)",
            len(announcement.models) - record.models_left_out,
            len(announcement.models),
        )
    if record.addrs_left_out:
        logger.warning("mdns: %d addresses do not fit in the TXT record", record.addrs_left_out)
    return ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=announcement.port,
        properties=dict(record.properties),
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
