"""AutoNAT v1 on the wire (/libp2p/autonat/1.0.0), and the dial-back done right.

The messages are py-libp2p's protobuf (``Message``: DIAL with our peer info, then one
DIAL_RESPONSE), each prefixed with its unsigned-varint length, one request per stream.

Why not py-libp2p 0.8.1's ``AutoNATService``: its server "dials back" with
``host.connect()``, which returns at once when a connection to the peer is open — and
one always is, the request came over it — so it answers OK to everyone and every node
would believe it is public. Here a dial-back is a fresh transport connection to the
address, secured (Noise) against the requester's peer ID, which proves that the
requester itself listens there, and then closed: the swarm never sees it, so it cannot
replace the connection the request came over.

Addresses follow go-libp2p's server: only the requester's observed IP is ever dialled
(the IP of each advertised address is replaced by it, so a node cannot make us dial a
third party), TCP only, at most MAX_DIAL_ADDRS of them.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Final

import multiaddr
import trio
from libp2p.abc import INetwork
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID
from libp2p.host.autonat.pb.autonat_pb2 import Message as Message
from libp2p.network import swarm as libp2p_swarm
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint

from ..errors import PeerUnavailable, RemoteProtocolError
from .streams import ByteStream, quietly

logger = logging.getLogger(__name__)

PROTOCOL_ID: Final = str(AUTONAT_PROTOCOL_ID)
MAX_MESSAGE_BYTES: Final = 8 * 1024  # a DIAL with MAX_DIAL_ADDRS addrs is ~0.5 KiB
MAX_DIAL_ADDRS: Final = 8  # a requester's addresses we try, at most
_MAX_VARINT_BYTES: Final = 4  # enough for MAX_MESSAGE_BYTES

OK: Final = int(Message.OK)
E_DIAL_ERROR: Final = int(Message.E_DIAL_ERROR)
E_DIAL_REFUSED: Final = int(Message.E_DIAL_REFUSED)
E_BAD_REQUEST: Final = int(Message.E_BAD_REQUEST)
E_INTERNAL_ERROR: Final = int(Message.E_INTERNAL_ERROR)
STATUS_NAMES: Final = {OK: "OK", E_DIAL_ERROR: "E_DIAL_ERROR", E_DIAL_REFUSED: "E_DIAL_REFUSED",
                       E_BAD_REQUEST: "E_BAD_REQUEST", E_INTERNAL_ERROR: "E_INTERNAL_ERROR"}


def _framed(msg: Message) -> bytes:
    body = bytes(msg.SerializeToString())
    return bytes(encode_uvarint(len(body))) + body


def encode_dial(peer_id: bytes, addrs: list[bytes]) -> bytes:
    """A DIAL request: "dial me, ``peer_id``, back on these addresses"."""
    msg = Message()
    msg.type = Message.DIAL
    msg.dial.peer.id = peer_id
    msg.dial.peer.addrs.extend(addrs)
    return _framed(msg)


def encode_response(status: int, text: str = "", addr: bytes | None = None) -> bytes:
    """A DIAL_RESPONSE with ``status`` (and the address reached, on OK)."""
    msg = Message()
    msg.type = Message.DIAL_RESPONSE
    msg.dialResponse.status = status  # type: ignore[assignment]
    msg.dialResponse.statusText = text
    if addr is not None:
        msg.dialResponse.addr = addr
    return _framed(msg)


async def read_message(stream: ByteStream) -> Message:
    """One length-prefixed AutoNAT message from ``stream``.

    Raises:
        RemoteProtocolError: a bad varint, a message over MAX_MESSAGE_BYTES, junk
            protobuf, or the stream ended first (the peer's fault).
        PeerConnectionLost: the stream broke.
    """
    buf = bytearray()
    while True:
        header = _length_of(buf)
        if header is not None:
            length, start = header
            if len(buf) >= start + length:
                msg = Message()
                try:
                    msg.ParseFromString(bytes(buf[start: start + length]))
                except Exception as exc:  # protobuf's DecodeError and friends
                    raise RemoteProtocolError(f"autonat: unparsable message: {exc}") from exc
                return msg
        chunk = await stream.receive_some(MAX_MESSAGE_BYTES)
        if not chunk:
            raise RemoteProtocolError("autonat: stream ended before a whole message")
        buf += chunk


def _length_of(buf: bytearray) -> tuple[int, int] | None:
    """(message length, where it starts) once the varint prefix is complete."""
    for i, byte in enumerate(buf[:_MAX_VARINT_BYTES]):
        if not byte & 0x80:
            length = _uvarint(buf[: i + 1])
            if length > MAX_MESSAGE_BYTES:
                raise RemoteProtocolError(
                    f"autonat: message of {length} bytes (limit {MAX_MESSAGE_BYTES})")
            return length, i + 1
    if len(buf) >= _MAX_VARINT_BYTES:
        raise RemoteProtocolError("autonat: message length prefix too long")
    return None


def _uvarint(data: bytes | bytearray) -> int:
    value = 0
    for shift, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * shift)
    return value


def dial_candidates(addrs: list[bytes], observed_ip: str) -> list[multiaddr.Multiaddr]:
    """The addresses to dial a requester back on: each advertised TCP address with its
    IP replaced by ``observed_ip`` (same family), relayed ones left out, de-duplicated,
    at most MAX_DIAL_ADDRS. Unparsable addresses are skipped (the peer's junk)."""
    family = "ip6" if ipaddress.ip_address(observed_ip).version == 6 else "ip4"
    out: list[multiaddr.Multiaddr] = []
    seen: set[str] = set()
    for raw in addrs:
        try:
            ma = multiaddr.Multiaddr(raw)
            names = [p.name for p in ma.protocols()]
            if "p2p-circuit" in names or names[:2] not in (["ip4", "tcp"], ["ip6", "tcp"]):
                continue
            if names[0] != family:
                continue
            port = int(ma.value_for_protocol("tcp"))
        except Exception:  # multiaddr raises several unrelated types on junk
            logger.debug("autonat: skipping an unparsable address from a requester")
            continue
        text = f"/{family}/{observed_ip}/tcp/{port}"
        if text not in seen:
            seen.add(text)
            out.append(multiaddr.Multiaddr(text))
        if len(out) >= MAX_DIAL_ADDRS:
            break
    return out


async def dial_back(network: INetwork, peer_id: str, addr: multiaddr.Multiaddr) -> None:
    """Open a fresh connection to ``addr``, prove ``peer_id`` answers there (the Noise
    handshake checks its key), and close it. The caller owns the deadline.

    The network key applies as on any dial: a transport that wraps connections itself
    does it in ``dial``; a swarm PSK goes through the module attribute
    ``libp2p.network.swarm.new_protected_conn``, looked up now so a replacement made
    there (p2p/pnet.py) is the one used.

    Raises:
        PeerUnavailable: nothing listens there, or not ``peer_id``.
    """
    transport_for = getattr(network, "transport_manager", None)
    upgrader = getattr(network, "upgrader", None)
    if transport_for is None or upgrader is None:
        raise PeerUnavailable(peer_id, "this libp2p network cannot dial back (no swarm)")
    transport = transport_for.transport_for_dialing(addr)
    if transport is None:
        raise PeerUnavailable(peer_id, f"no transport dials {addr}")
    target = ID.from_base58(peer_id)
    try:
        raw = await transport.dial(multiaddr.Multiaddr(f"{addr}/p2p/{peer_id}"))
    except Exception as exc:  # OpenConnectionError, OSError, a refused network gate
        raise PeerUnavailable(peer_id, f"dial-back to {addr} failed: {exc}") from exc
    conns: list[object] = [raw]
    try:
        psk = getattr(network, "psk", None)
        if psk:
            conns.append(raw := libp2p_swarm.new_protected_conn(raw, psk))
        conns.append(await upgrader.upgrade_security(raw, True, target))
    except Exception as exc:  # a handshake failure or another peer at that address
        raise PeerUnavailable(peer_id, f"dial-back to {addr} reached no {peer_id}: "
                                       f"{exc}") from exc
    finally:  # also when cancelled mid-handshake: an open socket would leak
        with trio.move_on_after(1, shield=True):
            for conn in reversed(conns):
                close = getattr(conn, "close", None)
                if close is not None:
                    await quietly(close, "closing a dial-back connection")

