"""The circuit relay v2 service: hop (relaying for others) and stop (accepting relayed
connections), py-libp2p 0.8.1's ``CircuitV2Protocol`` with its measured deviations fixed.

What 0.8.1 gets wrong and this subclass changes (protocols/relay.md, "py-libp2p 0.8.1"):
a RESERVE naming another peer reserves in that peer's name; a reservation of a peer that
left keeps its slot until it expires; the byte limit is shared by both directions (the
spec: each direction); the duration limit is only checked when data flows (an idle
circuit outlives it); there is no cap on circuits in total; closing one circuit to a peer
can close another one to the same peer (they share a dict slot); an inbound relayed
connection is labelled with the wrong relay (our own id); and it never gets the private
network's pnet wrapping on the dialling side, so relays broke private networks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream, IRawConnection
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID, STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.tools.constants import MAX_READ_LEN

from .streams import quietly

logger = logging.getLogger(__name__)

HOP_PROTOCOL_ID = str(PROTOCOL_ID)  # /libp2p/circuit/relay/0.2.0/hop
STOP_PROTOCOL_ID_STR = str(STOP_PROTOCOL_ID)  # /libp2p/circuit/relay/0.2.0/stop

Protect = Callable[[IRawConnection, bool, str], IRawConnection]
"""``(raw, initiator, peer)`` -> the connection as our network speaks it: pnet-wrapped
in a private network, first bytes checked either way (p2p/transport.py ``protect``)."""


@dataclass(frozen=True, slots=True)
class HopLimits:
    """What this node's relay service allows (the p2p.relay_* settings)."""

    max_reservations: int
    max_circuits: int
    reservation_ttl_s: float
    circuit_duration_s: float
    circuit_bytes: int  # each direction; 0 = unlimited


def circuit_addr(relay: str, peer: str) -> multiaddr.Multiaddr:
    """The transport address a relayed connection between us and ``peer`` carries."""
    return multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{peer}")


class CircuitService(CircuitV2Protocol):
    """Stop side always on (any node accepts relayed connections); the hop side is
    switched with :meth:`serve` (the node decides when it relays for others)."""

    def __init__(self, host: IHost, limits: HopLimits, *, protect: Protect | None) -> None:
        super().__init__(host, allow_hop=False, limits=RelayLimits(
            duration=math.ceil(limits.circuit_duration_s), data=limits.circuit_bytes,
            max_circuit_conns=limits.max_circuits, max_reservations=limits.max_reservations,
            reservation_ttl=math.ceil(limits.reservation_ttl_s)))
        self.hop_limits = limits
        self._protect = protect
        self.serving = False
        self.circuits = 0  # relayed connections running through us now
        self.refused = 0  # reservations and circuits refused by our limits

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(STOP_PROTOCOL_ID, _guarded("stop", self._handle_stop_stream))
        self.event_started.set()
        task_status.started()
        try:
            await self.manager.wait_finished()
        finally:
            self.serve(False)
            self.host.remove_stream_handler(STOP_PROTOCOL_ID)

    def serve(self, on: bool) -> None:
        """Start or stop relaying for others (running circuits are left to finish)."""
        if on and not self.serving:
            self.host.set_stream_handler(PROTOCOL_ID, _guarded("hop", self._handle_hop_stream,
                                                               close_after=True))
            logger.info("relay service on: up to %d reservations, %d circuits",
                        self.hop_limits.max_reservations, self.hop_limits.max_circuits)
        elif not on and self.serving:
            self.host.remove_stream_handler(PROTOCOL_ID)
            logger.info("relay service off")
        self.serving = on

    def reservations(self) -> int:
        return len(self.resource_manager._reservations)

    # -- hop: fixes over 0.8.1 -----------------------------------------------------------

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        # The spec reserves for the connection's peer; 0.8.1 trusts msg.peer.
        msg.ClearField("peer")
        # A reservation ends when its peer disconnects (spec); 0.8.1 keeps the slot.
        manager = self.resource_manager
        for pid in [p for p in manager._reservations if not manager._is_peer_connected(p)]:
            del manager._reservations[pid]
        peer = stream.muxed_conn.peer_id
        if not manager.can_accept_reservation(peer):
            self.refused += 1
            logger.info("relay: refused a reservation of %s: all %d slots taken (our limit)",
                        peer, self.hop_limits.max_reservations)
        await super()._handle_reserve(stream, msg)

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        if self.circuits >= self.hop_limits.max_circuits:
            self.refused += 1
            logger.info("relay: refused a circuit from %s: %d circuits running (our limit)",
                        stream.muxed_conn.peer_id, self.circuits)
            await self._send_status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED,
                                    "too many relayed connections")
            await self._close_stream(stream)
            return
        self.circuits += 1
        try:
            await super()._handle_connect(stream, msg)
        finally:
            self.circuits -= 1
            # 0.8.1 keys its bookkeeping by peer and never drops the dialler's entry.
            for key in [k for k, (s, _) in self._active_relays.items() if s is stream]:
                del self._active_relays[key]

    async def _relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                          deadline: float | None = None,
                          circuit_data_limit: list[int] | None = None) -> None:
        """Copy one direction of a circuit, each direction with its own byte budget, cut
        at the duration limit even when idle. (Replaces 0.8.1's pump, which shared one
        budget, checked the deadline only between reads and closed other circuits.)"""
        budget = self.limits.data or None
        until = math.inf if deadline is None else trio.current_time() + deadline - time.monotonic()
        cut: str | None = None
        with trio.move_on_at(until) as scope:
            while True:
                try:
                    data = await src_stream.read(MAX_READ_LEN)
                except Exception:  # EOF or reset: that side is done
                    break
                if not data:
                    break
                if budget is not None:
                    if len(data) > budget:
                        cut = f"{self.limits.data} bytes one way"
                        break
                    budget -= len(data)
                try:
                    with trio.fail_after(self.write_timeout):
                        await dst_stream.write(data)
                except Exception:  # the other side is gone or stuck
                    break
        if scope.cancelled_caught:
            cut = f"{self.limits.duration} s"
        if cut is not None:
            logger.info("relay: cut a circuit of %s at its limit of %s", peer_id, cut)
            for s in (src_stream, dst_stream):
                await quietly(s.reset, "reset of a relay stream")
        else:
            await self._close_stream(dst_stream)
            await self._close_stream(src_stream)

    # -- stop: a relayed connection arrives ----------------------------------------------

    async def handle_incoming_connection(self, stream: INetStream, remote_peer_id: bytes) -> None:
        relay = stream.muxed_conn.peer_id  # the STOP stream comes from the relay
        addr = circuit_addr(str(relay), str(ID(remote_peer_id)))
        raw: IRawConnection = RawConnection(stream=stream, initiator=False,
                                            connection_type=ConnectionType.RELAYED,
                                            addresses=[addr])
        if self._protect is not None:
            raw = self._protect(raw, False, str(ID(remote_peer_id)))
        try:
            await self.host.upgrade_inbound_connection(raw, addr)
        except Exception as exc:
            await quietly(stream.reset, "reset of a relay stream")
            raise ConnectionError(f"relayed connection via {relay} failed its upgrade: "
                                  f"{type(exc).__name__}: {exc}") from exc


def _guarded(side: str, handler: Callable[[INetStream], Awaitable[None]], *,
             close_after: bool = False) -> Callable[[INetStream], Awaitable[None]]:
    """A handler exception would take the whole host down in 0.8.1: log and reset instead.
    ``close_after``: close the stream when the handler returns (not for stop, whose
    stream goes on as the relayed connection)."""

    async def on_stream(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:  # a hostile or broken peer; keep serving the others
            logger.info("relay %s stream from %s failed (theirs or the path's): %s: %s",
                        side, getattr(stream.muxed_conn, "peer_id", "?"),
                        type(exc).__name__, exc)
            await quietly(stream.reset, "reset of a relay stream")
        else:
            if close_after:  # 0.8.1 answers a malformed message and leaves it open
                await quietly(stream.close, "close of a relay stream")

    return on_stream

