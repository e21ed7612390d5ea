"""Keeping one bootstrap address dialled: until it answers, and again whenever it drops.

Its registry entry (source bootstrap) exists from the start, so a dial failure is
listed with its reason (``peerllm peers``), not only logged. This loop alone redials a
bootstrap peer, with the backoff of scheduling.membership (the heartbeat leaves it be).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ..errors import NetworkKeyMismatch, PeerError
from ..p2p.registry import PeerRegistry, PeerState, Source
from ..scheduling.membership import next_bootstrap_delay

logger = logging.getLogger(__name__)


class BootstrapLinks(Protocol):
    """The host as a bootstrap loop uses it (``p2p.host.P2PHost``)."""

    async def connect_addr(self, addr: str) -> str: ...

    def is_connected(self, peer_id: str) -> bool: ...


def bootstrap_peer_id(addr: str) -> str:
    """The peer ID a bootstrap address names (config validation made sure it ends in
    /p2p/<peer-id>)."""
    return addr.rpartition("/p2p/")[2]


async def keep_bootstrap(addr: str, *, links: BootstrapLinks, registry: PeerRegistry,
                         meet: Callable[[str, list[str]], Awaitable[object]],
                         joined: Callable[[], None], watch_s: float, misses: int) -> None:
    """Dial ``addr`` until it answers, ``meet`` the peer (node-info or identify), call
    ``joined``, watch the connection every ``watch_s`` and redial when it drops. Returns
    only when the address can never work (another network, or unparsable)."""
    delay = next_bootstrap_delay(None)
    expected = bootstrap_peer_id(addr)
    registry.saw(expected, Source.BOOTSTRAP, now=time.time(), addrs=[addr])
    while True:
        try:
            peer_id = await links.connect_addr(addr)
        except NetworkKeyMismatch as exc:
            logger.error("bootstrap peer %s is in another network: %s", addr, exc.message)
            registry.saw(exc.peer_id, Source.BOOTSTRAP, now=time.time(), addrs=[addr])
            registry.failed(exc.peer_id, "network key differs", now=time.time(), refused=True)
            return
        except PeerError as exc:
            logger.info("bootstrap %s not reachable yet: %s", addr, exc.message)
            registry.saw(exc.peer_id, Source.BOOTSTRAP, now=time.time(), addrs=[addr])
            registry.failed(exc.peer_id, f"bootstrap dial failed: {exc.message}",
                            now=time.time(), max_misses=misses)
        except ValueError as exc:  # unparsable multiaddr slipped past config validation
            logger.error("bad bootstrap address %s: %s", addr, exc)
            registry.failed(expected, f"bad bootstrap address: {exc}", now=time.time(),
                            refused=True)
            return
        else:
            await meet(peer_id, [addr])
            joined()
            e = registry.get(peer_id)
            if e is not None and e.state in (PeerState.HEALTHY, PeerState.LIBP2P):
                delay = next_bootstrap_delay(None)
            while links.is_connected(peer_id):
                await trio.sleep(watch_s)
        await trio.sleep(delay)
        delay = next_bootstrap_delay(delay)
