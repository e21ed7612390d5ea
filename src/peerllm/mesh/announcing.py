"""Telling the mesh at once that our models changed: one coalesced republish.

A hot swap, a pull or a digest computed in the background changes what we offer. Peers
that know us see it in our next node-info; ``Announcer`` also republishes our DHT
records (the provider records by model id and by file digest) and refreshes our mDNS
TXT record soon after, instead of at the next republish tick. Calls in a burst (a
dozen digests computed one after the other) cause one publish.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..p2p.mdns import MdnsAnnouncement
from .local import LocalNode

logger = logging.getLogger(__name__)

ANNOUNCE_DELAY_S: Final = 1.0
"""How long a change waits for others to join it before the republish."""


class Announcer:
    """Runs ``publish`` once after each burst of ``announce()`` calls (``run`` loops)."""

    def __init__(self, publish: Callable[[], Awaitable[None]], *,
                 delay_s: float = ANNOUNCE_DELAY_S) -> None:
        self._publish = publish
        self._delay_s = delay_s
        self._wanted = trio.Event()
        self.published = 0  # publishes done (for tests and the logs)

    def announce(self) -> None:
        """Ask for a republish soon (from the trio thread; never blocks)."""
        self._wanted.set()

    async def run(self) -> None:
        """Forever: wait for a request, let the burst settle, publish once."""
        while True:
            await self._wanted.wait()
            await trio.sleep(self._delay_s)
            self._wanted = trio.Event()  # calls from here on ask for the next publish
            try:
                await self._publish()
            except Exception:  # a failed publish is retried at the next change or tick
                logger.warning("announcing our models failed", exc_info=True)
            self.published += 1


def mdns_announcement(local: LocalNode) -> MdnsAnnouncement:
    """Our mDNS record now. Model ids only: digests would not fit the TXT record's
    255-byte strings (wire/mdns_txt.py); a LAN peer learns them from our node-info."""
    addrs = tuple(local.addrs())
    return MdnsAnnouncement(peer_id=local.peer_id, name=local.name,
                            port=_first_tcp_port(addrs), addrs=addrs,
                            models=tuple(local.model_ids()))


def _first_tcp_port(addrs: tuple[str, ...]) -> int:
    for a in addrs:
        parts = a.split("/")
        if "tcp" in parts:
            i = parts.index("tcp")
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                return int(parts[i + 1])
    return 0
