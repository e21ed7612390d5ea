"""Relayed connections upgraded to direct ones by hole punching (DCUtR, /libp2p/dcutr).

py-libp2p 0.8.1's ``DCUtRProtocol`` does the exchange as the spec says: CONNECT with
the observed addresses both ways (it predicts "our NAT's IP, our listen port", since
its hole-punch dials leave from the listen port), SYNC, then both sides dial at once
so a NAT that keeps the port lets the SYNs cross (TCP simultaneous open). Every 2 s it
starts this for each peer connected only through a relay, at most 3 tries per peer;
new streams then prefer the direct connection (the swarm's "best" connection choice),
and the relayed one is closed after a 60 s grace. Its stream handler catches what it
raises, so a hostile peer cannot take the host down through it.

Measured in tests/netlab.py's topology (two masquerading NATs, a public relay): the
upgrade works within ~2 s of the relayed connection when the routers drop unsolicited
packets, as home routers do; behind a router that answers them with a reset it fails
(each first SYN is refused before the other side's has left), and the connection stays
relayed, which still works. See protocols/dcutr.md.

What we add: the service runs only with ``p2p.hole_punch``, inside the node's exit
stack (no task outlives the node), and hole-punch dials from the listen port go through
our transport's ``dial_with_source``, so they get the network key's protection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from libp2p.relay.circuit_v2 import dcutr
from libp2p.tools.anyio_service import background_trio_service

from .host import P2PHost

logger = logging.getLogger(__name__)

PROTOCOL_ID: Final = str(dcutr.PROTOCOL_ID)
DIAL_TIMEOUT_S: Final = 5  # one hole-punch dial (its rounds are 5 s each, 3 rounds)


class HolePunch:
    """The DCUtR service of one host."""

    def __init__(self, host: P2PHost) -> None:
        self.protocol = dcutr.DCUtRProtocol(host.libp2p, dial_timeout=DIAL_TIMEOUT_S)


@asynccontextmanager
async def open_hole_punch(host: P2PHost) -> AsyncIterator[HolePunch]:
    """Run DCUtR for ``host`` inside the block."""
    punch = HolePunch(host)
    async with background_trio_service(punch.protocol):
        await punch.protocol.event_started.wait()
        yield punch
