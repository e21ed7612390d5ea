"""Telling plain libp2p peers from PeerLLM nodes, so the first are kept and never asked
for node-info in a loop.

A peer that does not speak /peerllm/node-info/1.0.0 (a js-libp2p or go-libp2p node, an
IPFS peer, a relay) is welcome: it may be a DHT peer, a bootstrap peer or a relay. It
is recorded as ``PeerState.LIBP2P`` with what its identify said, kept connected, and
never becomes a scheduling candidate (candidates are HEALTHY entries with node-info).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from ..errors import PeerError, ProtocolError
from ..p2p.identify import PeerIdentity
from ..p2p.registry import PeerRegistry, PeerState
from ..wire import nodeinfo as wni

logger = logging.getLogger(__name__)


class PeerIdentifier(Protocol):
    """What identify says about a peer (``p2p.identify.Identifier``)."""

    def cached_protocols(self, peer_id: str) -> tuple[str, ...] | None:
        """The protocols the host's own identify stored; None until it finished."""
        ...

    def cached_agent(self, peer_id: str) -> str | None:
        """The agent version the host's own identify stored; None if none."""
        ...

    async def identify(self, peer_id: str) -> PeerIdentity:
        """A fresh identify answer (raises PeerError / ProtocolError)."""
        ...


class PlainPeers:
    """Classifies peers as plain libp2p by their identify answer, recording it in the
    registry."""

    def __init__(self, registry: PeerRegistry, identifier: PeerIdentifier) -> None:
        self._registry = registry
        self._identifier = identifier

    async def is_plain(self, peer_id: str) -> bool:
        """True if ``peer_id`` is known not to speak node-info, so it must not be asked.

        A peer recorded as plain stays so without any I/O until the host's identify
        (refreshed by identify push and on every new connection) lists node-info. A peer
        met for the first time whose cached protocols lack node-info is asked identify
        once, for its agent; one without a cached list yet is asked node-info as usual.
        """
        cached = self._identifier.cached_protocols(peer_id)
        entry = self._registry.get(peer_id)
        if entry is not None and entry.state is PeerState.LIBP2P:
            return cached is None or wni.PROTOCOL_ID not in cached
        if cached is not None and wni.PROTOCOL_ID not in cached:
            agent = self._identifier.cached_agent(peer_id)
            if agent is not None:  # the host's own identify told us all: no stream
                return self._record(peer_id, PeerIdentity(agent=agent, protocols=cached))
            return await self.classify(peer_id)
        return False

    async def classify(self, peer_id: str) -> bool:
        """Node-info could not be opened on a live connection to ``peer_id``: ask its
        identify. True (and recorded as LIBP2P) if it answered without node-info; False
        if it could not be asked or says it speaks node-info (a real failure)."""
        try:
            ident = await self._identifier.identify(peer_id)
        except (PeerError, ProtocolError) as exc:
            # Some stacks refuse a second identify stream; the host's own answer, if it
            # has one, still tells what the peer is.
            cached = self._identifier.cached_protocols(peer_id)
            if cached is None or wni.PROTOCOL_ID in cached:
                logger.debug("peer %s: identify failed too: %s", peer_id, exc)
                return False
            ident = PeerIdentity(agent=self._identifier.cached_agent(peer_id),
                                 protocols=cached)
        if wni.PROTOCOL_ID in ident.protocols:
            return False
        return self._record(peer_id, ident)

    def _record(self, peer_id: str, ident: PeerIdentity) -> bool:
        before = self._registry.get(peer_id)
        was_plain = before is not None and before.state is PeerState.LIBP2P
        entry = self._registry.plain_peer(peer_id, agent=ident.agent,
                                          protocols=ident.protocols, now=time.time())
        if entry is not None and not was_plain:
            logger.info("peer %s is a plain libp2p peer (agent %s, %d protocols): kept "
                        "connected, not used for inference", peer_id,
                        ident.agent or "unnamed", len(ident.protocols))
        return entry is not None
