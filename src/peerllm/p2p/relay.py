"""Circuit relay v2 for this host: reserving a slot on a relay, dialling a peer through
one, advertising our /p2p-circuit addresses, and the relay service (p2p/hop.py).

py-libp2p 0.8.1's own client (``CircuitV2Transport``) cannot be used as a transport: its
swarm hands circuit addresses to the TCP transport and then drops them as "relay-only",
its dial skips the private network's pnet wrapping, and its reservation call returns a
bare bool (the relay's status is lost). So the two client exchanges are done here over
the library's protobuf messages (protocols/relay.md).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import multiaddr
from libp2p.abc import IHost, INetStream, IRawConnection
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.envelope import unmarshal_envelope
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Voucher
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeerId
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RELAY_RSVP_DOMAIN
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service

from ..errors import PeerUnavailable, RelayRefused
from .hop import HOP_PROTOCOL_ID, CircuitService, HopLimits, Protect, circuit_addr
from .streams import quietly

logger = logging.getLogger(__name__)

CIRCUIT = "/p2p-circuit"
RELAY_PROVIDER_REF = "/peerllm/relay"  # DHT provider key (wire.records.provider_key) of relays
KNOWN_CIRCUITS_MAX = 1024  # peers whose circuit addresses we remember for dialling


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot a relay holds for us: it forwards connections to us until ``expires_at``."""

    relay: str
    expires_at: float  # unix time
    addrs: tuple[str, ...]  # the relay's own addresses, each ending in /p2p/<relay>
    duration_s: int  # the relay's per-circuit limits (0: none)
    bytes_limit: int

    def circuit_addrs(self, peer_id: str) -> list[str]:
        """Our addresses through this relay: ``<relay addr>/p2p-circuit/p2p/<us>``."""
        return [f"{a}{CIRCUIT}/p2p/{peer_id}" for a in self.addrs]


def is_circuit(addr: str) -> bool:
    return CIRCUIT in addr


def split_circuit(addr: str) -> tuple[str, list[str], str]:
    """``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`` -> (relay, relay addrs, peer).

    Raises:
        ValueError: not a circuit address naming both the relay and the peer.
    """
    head, sep, tail = addr.partition(CIRCUIT)
    relay_head, rsep, relay = head.rpartition("/p2p/")
    if not sep or not rsep or not relay or not tail.startswith("/p2p/") or CIRCUIT in tail:
        raise ValueError(f"not a circuit address /…/p2p/<relay>/p2p-circuit/p2p/<peer>: {addr}")
    peer = tail[len("/p2p/"):]
    if not peer or "/" in peer:
        raise ValueError(f"circuit address must end in /p2p/<peer>: {addr}")
    try:
        multiaddr.Multiaddr(addr)  # checks each /p2p/ value is a peer id (a multihash)
    except Exception as exc:
        raise ValueError(f"unparsable circuit address {addr}: {exc}") from exc
    return relay, ([head] if relay_head else []), peer


class Relay:
    """Both circuit relay roles of one host (made and run by ``open_relay``)."""

    def __init__(self, host: IHost, service: CircuitService, protect: Protect | None) -> None:
        self._host = host
        self.service = service
        self._protect = protect
        self._advertised: list[multiaddr.Multiaddr] = []
        self._known: OrderedDict[str, list[str]] = OrderedDict()

    # -- advertising our circuit addresses ---------------------------------------------

    def advertise(self, addrs: Sequence[str]) -> None:
        """Make ``addrs`` (our circuit addresses) part of what the host advertises:
        identify, node-info, DHT records and mDNS all read ``host.get_addrs()``."""
        self._advertised = [multiaddr.Multiaddr(a) for a in dict.fromkeys(addrs)]

    def advertised(self) -> list[str]:
        return [str(a) for a in self._advertised]

    def _install_addrs(self) -> None:
        # 0.8.1's get_addrs() strips the first /p2p/ of each address and appends ours,
        # which would cut a circuit address at the relay's id: add ours after it.
        plain = self._host.get_addrs

        def get_addrs() -> list[multiaddr.Multiaddr]:
            return [*plain(), *self._advertised]

        self._host.get_addrs = get_addrs

    # -- dialling through a relay --------------------------------------------------------

    def learn(self, peer_id: str, addrs: Sequence[str]) -> list[str]:
        """Remember ``peer_id``'s circuit addresses among ``addrs``; return all we know."""
        fresh = []
        for a in addrs:
            if a.endswith(CIRCUIT):  # the peerstore keeps addresses without /p2p/<peer>
                a = f"{a}/p2p/{peer_id}"
            try:
                if is_circuit(a) and split_circuit(a)[2] == peer_id:
                    fresh.append(a)
            except ValueError:
                logger.debug("ignoring a bad circuit address %r of %s", a, peer_id)
        if fresh:
            self._known[peer_id] = list(dict.fromkeys(fresh))[:8]
            self._known.move_to_end(peer_id)
            while len(self._known) > KNOWN_CIRCUITS_MAX:
                self._known.popitem(last=False)
        return list(self._known.get(peer_id, ()))

    async def dial(self, relay: str, peer_id: str) -> None:
        """Open a relayed connection to ``peer_id`` through ``relay`` (already connected):
        HOP CONNECT, then Noise and Yamux end to end over the relayed stream (in pnet
        first in a private network). The caller bounds the time.

        Raises:
            RelayRefused: the relay answered another status than OK (named).
            PeerUnavailable: the relay or the path failed.
        """
        stream = await self._hop_stream(relay)
        target = ID.from_base58(peer_id)
        try:
            await write_delimited_msg(stream, HopMessage(
                type=HopMessage.CONNECT, peer=PbPeerId(id=target.to_bytes())))
            reply = await read_delimited_msg(stream, HopMessage)
            _check_status(relay, reply, f"a relayed connection to {peer_id}")
            raw: IRawConnection = RawConnection(
                stream=stream, initiator=True, connection_type=ConnectionType.RELAYED,
                addresses=[circuit_addr(relay, peer_id)])
            if self._protect is not None:
                raw = self._protect(raw, True, peer_id)
            await self._host.upgrade_outbound_connection(raw, target)
        except RelayRefused:
            await quietly(stream.close, "close of a relay stream")
            raise
        except Exception as exc:
            await quietly(stream.close, "close of a relay stream")
            raise PeerUnavailable(peer_id, f"relayed connection via {relay} failed: "
                                           f"{type(exc).__name__}: {exc}") from exc

    # -- reserving a slot ----------------------------------------------------------------

    def speaks_hop(self, peer_id: str) -> bool | None:
        """Whether identify says ``peer_id`` serves the hop protocol (None: not known)."""
        try:
            protocols = self._host.get_peerstore().get_protocols(ID.from_base58(peer_id))
        except Exception:  # never identified
            return None
        return HOP_PROTOCOL_ID in protocols if protocols else None

    async def reserve(self, relay: str) -> Reservation:
        """Ask ``relay`` (already connected) for a slot, or renew ours. The caller bounds
        the time.

        Raises:
            RelayRefused: the relay answered another status than OK (named).
            PeerUnavailable: no hop stream, or a reply that is not a reservation.
        """
        stream = await self._hop_stream(relay)
        try:
            await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
            reply = await read_delimited_msg(stream, HopMessage)
        except Exception as exc:
            raise PeerUnavailable(relay, f"reservation exchange failed: "
                                         f"{type(exc).__name__}: {exc}") from exc
        finally:
            await quietly(stream.close, "close of a relay stream")
        _check_status(relay, reply, "a reservation")
        if not reply.HasField("reservation") or reply.reservation.expire <= time.time():
            raise PeerUnavailable(relay, "the relay said OK but sent no reservation with a "
                                         "future expiry (the relay's fault)")
        rsv = reply.reservation
        if rsv.voucher and not _voucher_ok(bytes(rsv.voucher), relay, self._host.get_id()):
            logger.warning("relay %s sent a reservation voucher that does not verify (the "
                           "relay's fault); vouchers are advisory, keeping the slot", relay)
        return Reservation(relay=relay, expires_at=float(rsv.expire),
                           addrs=tuple(_relay_addrs(relay, rsv.addrs)),
                           duration_s=int(reply.limit.duration) if reply.HasField("limit") else 0,
                           bytes_limit=int(reply.limit.data) if reply.HasField("limit") else 0)

    async def _hop_stream(self, relay: str) -> INetStream:
        try:
            return await self._host.new_stream(ID.from_base58(relay),
                                               [TProtocol(HOP_PROTOCOL_ID)])
        except Exception as exc:
            raise PeerUnavailable(relay, f"does not serve the circuit relay hop protocol "
                                         f"({type(exc).__name__}: {exc})") from exc


def _check_status(relay: str, reply: HopMessage, what: str) -> None:
    code = int(reply.status) if reply.HasField("status") else 0
    if reply.type != HopMessage.STATUS or code != StatusCode.OK:
        try:
            name = StatusCode(code).name
        except ValueError:
            name = "UNKNOWN"
        raise RelayRefused(relay, f"refused {what}: {name} ({code})")


def _relay_addrs(relay: str, raw: Sequence[bytes]) -> list[str]:
    """The relay's addresses from its reservation, each ending in /p2p/<relay>."""
    out = []
    for b in raw:
        try:
            a = str(multiaddr.Multiaddr(b))
        except Exception:  # the relay sent junk; keep the rest
            logger.debug("relay %s sent an unparsable address", relay)
            continue
        if is_circuit(a):
            continue
        if not a.endswith(f"/p2p/{relay}"):
            a = f"{a}/p2p/{relay}"
        out.append(a)
    return list(dict.fromkeys(out))


def _voucher_ok(voucher: bytes, relay: str, us: ID) -> bool:
    try:
        env = unmarshal_envelope(voucher)
        env.validate(RELAY_RSVP_DOMAIN)
        body = Voucher()
        body.ParseFromString(bytes(env.raw_payload))
        signer = ID.from_pubkey(env.public_key)
        return bool(signer == ID(body.relay) == ID.from_base58(relay) and ID(body.peer) == us)
    except Exception:
        return False



@asynccontextmanager
async def open_relay(host: IHost, limits: HopLimits, *,
                     protect: Protect | None) -> AsyncIterator[Relay]:
    """Run the circuit relay roles on ``host`` (stop side on, hop side off until
    ``relay.service.serve(True)``) until the block exits."""
    service = CircuitService(host, limits, protect=protect)
    relay = Relay(host, service, protect)
    relay._install_addrs()
    async with background_trio_service(service):
        yield relay
