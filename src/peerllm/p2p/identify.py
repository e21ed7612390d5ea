"""What a peer says it is over libp2p identify (/ipfs/id/1.0.0): its agent and protocols.

py-libp2p runs identify on every connection but keeps only the protocols (in the
peerstore), not the agent version: ``keep_agent_versions`` makes it keep that too, so a
plain libp2p peer — one that does not speak /peerllm/node-info/1.0.0 — needs no stream
of ours (js-libp2p resets a second inbound identify stream). Only when the host has no
answer yet is the peer asked here, once. The answer is a peer's claim, shown to
operators: it is bounded and cleaned before anyone prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import trio
from google.protobuf.message import DecodeError
from libp2p.identity.identify.identify import ID as LIBP2P_IDENTIFY_ID
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError

from ..errors import PeerTimeout, RemoteProtocolError
from .host import P2PHost
from .streams import ByteStream, StreamOpener

IDENTIFY_PROTOCOL_ID: Final = str(LIBP2P_IDENTIFY_ID)
"""/ipfs/id/1.0.0, as py-libp2p serves it."""
MAX_IDENTIFY_BYTES: Final = 64 * 1024
"""Most bytes read of one identify answer (go-libp2p caps its own signed ones at 8 KiB)."""
MAX_PROTOCOLS: Final = 64
"""Most protocols kept of one answer; the rest are dropped."""
MAX_TEXT: Final = 128
"""Longest agent version or protocol id kept (longer ones are cut)."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The agent version and protocols a peer's identify listed (cleaned, bounded)."""

    agent: str | None
    protocols: tuple[str, ...]


def _clean(text: str) -> str:
    # Printed in a terminal table: no control characters (escape sequences) survive.
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_TEXT])


def _uvarint(data: bytes) -> tuple[int, int] | None:
    """(value, bytes used) of the unsigned varint at the start of ``data``; None if it is
    not complete yet."""
    value = 0
    for i, byte in enumerate(data[:10]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    return None


def _message_end(data: bytes) -> int | None:
    """Where the varint-prefixed message in ``data`` ends, once all of it is there."""
    head = _uvarint(data)
    if head is None or head[1] + head[0] > len(data):
        return None
    return head[1] + head[0]


def decode_identify(data: bytes) -> PeerIdentity:
    """Decode an identify answer: varint-length-prefixed (the spec, go/js/rust, py-libp2p
    by default) or, from older peers, the bare protobuf.

    Raises:
        RemoteProtocolError: empty, or neither form parses.
    """
    if not data:
        raise RemoteProtocolError("empty identify answer")
    msg = Identify()
    head = _uvarint(data)
    candidates = [data[head[1]:]] if head is not None and head[1] + head[0] == len(data) else []
    for body in [*candidates, data]:
        try:
            msg.ParseFromString(body)
        except DecodeError:
            continue
        protocols = tuple(dict.fromkeys(_clean(p) for p in msg.protocols[:MAX_PROTOCOLS]))
        agent = _clean(msg.agent_version) if msg.agent_version else None
        return PeerIdentity(agent=agent, protocols=protocols)
    raise RemoteProtocolError(f"identify answer of {len(data)} bytes is not an Identify "
                              "protobuf")


async def read_identify(stream: ByteStream) -> PeerIdentity:
    """Read one identify answer from ``stream``: up to its varint-given length, or until
    the peer closes (a bare protobuf), at most MAX_IDENTIFY_BYTES.

    Raises:
        RemoteProtocolError: too long, or not an Identify message.
        PeerConnectionLost: the stream broke.
    """
    data = b""
    while True:
        end = _message_end(data)
        if end is not None:
            try:
                return decode_identify(data[:end])
            except RemoteProtocolError:
                pass  # a bare protobuf whose first bytes read as a length: read to its end
        if len(data) > MAX_IDENTIFY_BYTES:
            raise RemoteProtocolError(f"identify answer longer than {MAX_IDENTIFY_BYTES} "
                                      "bytes")
        chunk = await stream.receive_some()
        if not chunk:
            return decode_identify(data)
        data += chunk


async def fetch_identity(opener: StreamOpener, peer_id: str, *,
                         timeout_s: float) -> PeerIdentity:
    """Ask ``peer_id`` for its identify answer on a new stream.

    Raises:
        PeerTimeout: no full answer within ``timeout_s``.
        PeerUnavailable, PeerConnectionLost: the stream could not be opened or broke.
        RemoteProtocolError: the answer is not an Identify message.
    """
    with trio.move_on_after(timeout_s):
        stream = await opener.open_stream(peer_id, IDENTIFY_PROTOCOL_ID)
        try:
            return await read_identify(stream)
        finally:
            await stream.reset()  # read all we wanted; the peer closes its side anyway
    raise PeerTimeout(peer_id, f"no identify answer within {timeout_s} s", phase="call")


CachedProtocols = Callable[[str], tuple[str, ...] | None]
"""The protocols a host's own identify stored for a peer; None until it finished."""
CachedAgent = Callable[[str], str | None]
"""The agent version a host's own identify stored for a peer (keep_agent_versions)."""

AGENT_KEY: Final = "AgentVersion"
"""The peerstore metadata key the agent version is kept under (go-libp2p's name)."""


def keep_agent_versions() -> None:
    """Make py-libp2p's identify (and identify push) store each peer's agent version.

    0.8.1 parses the whole Identify answer but its ``update_peerstore_from_identify``
    drops ``agent_version``; both callers import that function by name, so the name is
    rebound in their modules to one that stores the (cleaned) agent as well. Idempotent.
    """
    import libp2p.host.basic_host as basic_host
    import libp2p.identity.identify_push.identify_push as push

    original = basic_host.update_peerstore_from_identify
    if getattr(original, "_keeps_agent", False):
        return

    async def update(peerstore: Any, peer_id: ID, msg: Any) -> None:
        await original(peerstore, peer_id, msg)
        if msg.HasField("agent_version") and msg.agent_version:
            peerstore.put(peer_id, AGENT_KEY, _clean(msg.agent_version))

    update._keeps_agent = True  # type: ignore[attr-defined]
    basic_host.update_peerstore_from_identify = update
    push.update_peerstore_from_identify = update


class Identifier:
    """Membership's view of identify: the host's cached protocol list (no I/O) and a
    fresh answer over ``opener``."""

    def __init__(self, opener: StreamOpener, *, timeout_s: float,
                 cached: CachedProtocols | None = None,
                 cached_agent: CachedAgent | None = None) -> None:
        self._opener = opener
        self._timeout_s = timeout_s
        self._cached = cached
        self._cached_agent = cached_agent

    def cached_protocols(self, peer_id: str) -> tuple[str, ...] | None:
        return None if self._cached is None else self._cached(peer_id)

    def cached_agent(self, peer_id: str) -> str | None:
        return None if self._cached_agent is None else self._cached_agent(peer_id)

    async def identify(self, peer_id: str) -> PeerIdentity:
        """``fetch_identity`` (same errors)."""
        return await fetch_identity(self._opener, peer_id, timeout_s=self._timeout_s)


def host_identifier(host: P2PHost, *, timeout_s: float) -> Identifier:
    """An Identifier over ``host``, reading py-libp2p's peerstore for the cached list."""
    def cached(peer_id: str) -> tuple[str, ...] | None:
        try:
            found = host.libp2p.get_peerstore().get_protocols(ID.from_base58(peer_id))
        except (PeerStoreError, ValueError):
            return None
        return tuple(str(p) for p in found) or None

    def agent(peer_id: str) -> str | None:
        try:
            value = host.libp2p.get_peerstore().get(ID.from_base58(peer_id), AGENT_KEY)
        except (PeerStoreError, ValueError):
            return None
        return value if isinstance(value, str) else None

    keep_agent_versions()
    return Identifier(host, timeout_s=timeout_s, cached=cached, cached_agent=agent)
