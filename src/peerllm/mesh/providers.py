"""Who holds a model file: the peers whose node-info lists it, else the DHT's providers.

The ``ProviderFinder`` port of the Pulls service (mesh/pull_ports.py). A digest matches a
peer's ``ModelInfo.digest``; a model id its ``ModelInfo.id``. Only healthy peers count
(their node-info is fresh); the DHT's providers are dialled and then read the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ..p2p.registry import PeerRegistry, PeerState, Source
from ..wire import blob as wb
from .pull_ports import Holder

logger = logging.getLogger(__name__)

DHT_CONNECT_S = 10.0
"""How long connecting to the DHT's providers of a file may take, all of them at once."""


class Dialer(Protocol):
    """mesh.membership.Membership's lookups."""

    async def find_providers(self, model: str) -> list[tuple[str, list[str]]]: ...

    async def connect_peer(self, peer_id: str, addrs: list[str], source: Source) -> bool: ...


class MeshProviders:
    def __init__(self, *, registry: PeerRegistry, dialer: Dialer, self_peer_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._dialer = dialer
        self._self = self_peer_id
        self._clock = clock

    def listed(self, ref: str) -> list[Holder]:
        """Healthy peers whose node-info lists ``ref`` (digest or model id)."""
        digest = wb.prefixed_digest(ref)
        by_digest, want = digest is not None, digest or ref
        self._registry.refresh_states(now=self._clock())
        found: list[Holder] = []
        for e in self._registry.entries():
            if e.peer_id == self._self or e.state is not PeerState.HEALTHY or e.info is None:
                continue
            for m in e.info.models:
                digest = m.digest  # None from a node that does not know it (yet)
                if (digest == want) if by_digest else (m.id == want):
                    found.append(Holder(peer_id=e.peer_id, model_id=m.id, digest=digest))
                    break
        return found

    async def find(self, ref: str) -> list[Holder]:
        found = self.listed(ref)
        if found:
            return found
        providers = [(p, a) for p, a in await self._dialer.find_providers(ref)
                     if p != self._self]
        if not providers:
            return []
        with trio.move_on_after(DHT_CONNECT_S):
            async with trio.open_nursery() as nursery:
                for peer_id, addrs in providers:
                    nursery.start_soon(self._connect, peer_id, addrs)
        return self.listed(ref)

    async def _connect(self, peer_id: str, addrs: list[str]) -> None:
        # connect_peer records its failures in the registry and never raises them.
        connect: Awaitable[bool] = self._dialer.connect_peer(peer_id, addrs, Source.DHT)
        if not await connect:
            logger.info("DHT provider %s of a model file is not reachable", peer_id)
