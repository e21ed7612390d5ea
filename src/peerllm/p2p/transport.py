"""The TCP transport: plain libp2p on the wire, pnet-wrapped in a private network, and a
fast, clear refusal of a peer from another network.

An open network speaks TCP → multistream-select → Noise → Yamux with nothing in front,
as every libp2p implementation does. A private network wraps each raw connection per the
pnet spec (p2p/pnet.py) before that. Either way the first bytes a peer sends (decrypted,
in a private network) must start multistream-select's header, because the spec makes it
the first thing both sides send. When they do not, the peer is in another network: we
log a WARNING naming the likely cause, audit ``network_key_mismatch``, close at once and
(when we dialled) raise ``NetworkKeyMismatch``. Without this check a key mismatch is a
garbled negotiation that only a 30 s timeout ends. See protocols/network-gate.md.

``protect`` is the one place a raw connection gets this; every transport's raw
connections go through it (our TCP transport here, the relay's circuits in p2p/relay.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio
from libp2p.abc import IRawConnection
from libp2p.io.abc import ReadWriteCloser
from libp2p.protocol_muxer.multiselect import MULTISELECT_PROTOCOL_ID
from libp2p.transport.tcp.tcp import TCP, TCPListener
from libp2p.utils.varint import encode_delim
from multiaddr import Multiaddr

from ..audit import NULL_AUDIT, AuditSink
from ..audit import events as audit_events
from ..errors import NetworkKeyMismatch
from ..security_events import Direction
from .pnet import NetworkKey, NonceUnreadable, PnetConn, WrappedConn
from .streams import quietly

logger = logging.getLogger(__name__)

MULTISTREAM_HEADER = encode_delim(MULTISELECT_PROTOCOL_ID.encode())
"""What every libp2p connection starts with (b"\\x13/multistream/1.0.0\\n")."""
OLD_PRELUDE_MAGIC = b"/peerllm/pnet/1\n"
"""How PeerLLM before #11 started every connection (its network prelude); recognised
only to name the cause of a refusal."""

KEY_DIFFERS = "network key differs"
SILENT_PEER_S = 1.5
"""How long a peer we dialled may stay silent before its first byte. A libp2p listener
answers multistream-select within one round trip; one of another network reads our
bytes as garbage, and js-libp2p then waits silently for a length it will never get (up
to its 10 s upgrade timeout), leaving nothing for the check to read."""


_OLDER_PEERLLM = (f"peer runs an older PeerLLM (network prelude "
                  f"{OLD_PRELUDE_MAGIC.decode().strip()}), which no longer interoperates: "
                  "upgrade it")


def first_bytes_problem(data: bytes, *, private: bool, nonce: bytes = b"") -> str | None:
    """Why ``data`` (the first bytes a peer sent, decrypted when ``private``; ``nonce``
    is the raw pnet nonce then) cannot start a connection of our network; None while
    it is still a multistream header."""
    if MULTISTREAM_HEADER.startswith(data[: len(MULTISTREAM_HEADER)]):
        return None
    if data.startswith(OLD_PRELUDE_MAGIC) or nonce.startswith(OLD_PRELUDE_MAGIC):
        return _OLDER_PEERLLM
    if private:
        return (f"{KEY_DIFFERS}: the peer's first bytes under our key are not "
                "multistream-select, so it holds another key")
    return (f"{KEY_DIFFERS}: the peer is probably in a private network (its first bytes "
            "are not multistream-select) and we are in the open one")


def nonce_problem(seen: bytes) -> str:
    """Why a private-network peer's raw bytes (where its pnet nonce belongs) show it is
    not in our network; ``seen`` is what it sent before it stopped or gave itself away."""
    if seen.startswith(MULTISTREAM_HEADER):
        return f"{KEY_DIFFERS}: the peer is in the open network (no network key), we are not"
    if seen.startswith(OLD_PRELUDE_MAGIC):
        return _OLDER_PEERLLM
    return (f"{KEY_DIFFERS}: the peer closed the connection right after the pnet nonce "
            "exchange, as a peer holding another key does")


READ_AHEAD_BYTES = 64 * 1024
"""Bytes asked of the socket when a reader (Noise) asks for fewer: the rest is kept."""


class CheckedConn(WrappedConn):
    """A raw connection whose peer must open with multistream-select (decrypted by the
    pnet wrapping underneath, when there is one); refuses it once, loudly, otherwise."""

    def __init__(self, conn: ReadWriteCloser, *, key: NetworkKey, initiator: bool,
                 peer: str, audit: AuditSink) -> None:
        self._private = key.key is not None
        inner: ReadWriteCloser = conn
        if key.key is not None:
            inner = PnetConn(conn, key.key, initiator=initiator,
                             not_a_nonce=(MULTISTREAM_HEADER,))
        super().__init__(inner, initiator=initiator)
        self._peer = peer
        self._audit = audit
        self._seen = b""
        self._pending = b""  # read while checking, not yet handed up
        self._checked = False

    async def write(self, data: bytes) -> None:
        await self._conn.write(data)

    async def read(self, n: int | None = None) -> bytes:
        if self._pending:
            return self._take(n)
        if self._checked:
            if n is None:
                passed: bytes = await self._conn.read(n)
                return passed
            # Read ahead: Noise asks for a 2-byte length, then the message; one socket
            # read serves both (and any frames behind it) instead of a syscall each,
            # which is what a small frame (a token) costs most on these machines.
            self._pending = await self._conn.read(max(n, READ_AHEAD_BYTES))
            return self._take(n)
        # Read at least a header's worth while checking, so that the verdict (and the
        # cause named in it) rests on more than the one byte a varint reader asks for.
        want = None if n is None else max(n, len(MULTISTREAM_HEADER) - len(self._seen))
        silent_for = SILENT_PEER_S if self.is_initiator and not self._seen else float("inf")
        try:
            with trio.move_on_after(silent_for) as silence:
                data: bytes = await self._conn.read(want)
        except NonceUnreadable as exc:
            await self._refuse(nonce_problem(exc.seen), exc, suspected=not exc.seen)
        except Exception as exc:
            if self._private and not self._seen:  # a reset right after the nonces: below
                await self._refuse(nonce_problem(b""), exc, suspected=True)
            raise
        if silence.cancelled_caught:
            await self._refuse(f"{KEY_DIFFERS}: the peer sent nothing for {SILENT_PEER_S} s "
                               "after our first bytes, as a libp2p peer of another network "
                               "does (it cannot read them and waits)", None, suspected=True)
        if not data:
            # In a private network a peer holding another key hangs up on the nonce
            # exchange; in the open one an EOF says nothing about keys.
            if self._private and not self._seen:
                await self._refuse(nonce_problem(b""), None, suspected=True)
            return data
        self._seen += data
        nonce = self._conn.their_nonce if isinstance(self._conn, PnetConn) else None
        problem = first_bytes_problem(self._seen, private=self._private, nonce=nonce or b"")
        if problem is not None:
            await self._refuse(problem, None)
        self._checked = len(self._seen) >= len(MULTISTREAM_HEADER)
        self._pending = data
        return self._take(n)

    def _take(self, n: int | None) -> bytes:
        size = len(self._pending) if n is None else n
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    async def _refuse(self, reason: str, cause: BaseException | None, *,
                      suspected: bool = False) -> NoReturn:
        """Close and raise NetworkKeyMismatch. ``suspected``: the evidence is behaviour
        (silence, a hang-up), not bytes. On our dials that is still the likely cause and
        said as a WARNING (the dial is retried with backoff); a dialler that connects and
        hangs up without a byte (a health check, a port scan, a cancelled dial) is not
        worth a WARNING or an audit line."""
        direction = Direction.OUTBOUND if self.is_initiator else Direction.INBOUND
        if direction is Direction.OUTBOUND:
            logger.warning("refused connection to %s: %s", self._peer, reason)
        elif suspected:
            logger.info("inbound connection from %s ended before its first bytes: %s",
                        self._peer, reason)
        else:
            logger.warning("refused inbound connection from %s: %s", self._peer, reason)
        if not (suspected and direction is Direction.INBOUND):
            audit_events.network_key_mismatch(self._audit, peer=self._peer,
                                              direction=direction, reason=reason)
        await quietly(self._conn.close, "close after a refusal")
        raise NetworkKeyMismatch(self._peer, reason, suspected=suspected) from cause


def protect(conn: ReadWriteCloser, key: NetworkKey, *, initiator: bool, peer: str,
            audit: AuditSink = NULL_AUDIT) -> IRawConnection:
    """``conn`` as our network speaks it: pnet-wrapped when ``key`` is set, and checked
    either way (see the module docstring). ``peer`` names the other end in the WARNING
    and the audit line: its peer ID when we dialled, else its address."""
    return CheckedConn(conn, key=key, initiator=initiator, peer=peer, audit=audit)


def _remote(conn: ReadWriteCloser) -> str:
    addr = conn.get_remote_address()
    return f"{addr[0]}:{addr[1]}" if addr else "?"


class NetworkTCP(TCP):
    """libp2p's TCP transport with every raw connection passed through ``protect``."""

    def __init__(self, key: NetworkKey, *, audit: AuditSink = NULL_AUDIT) -> None:
        super().__init__()
        self._key = key
        self._audit = audit

    async def dial(self, maddr: Multiaddr) -> IRawConnection:
        conn = await super().dial(maddr)
        try:
            peer = str(maddr.value_for_protocol("p2p") or maddr)
        except Exception:  # no /p2p/ part: name the address instead
            peer = str(maddr)
        return protect(conn, self._key, initiator=True, peer=peer, audit=self._audit)

    async def dial_with_source(self, maddr: Multiaddr, source: tuple[str, int]
                               ) -> IRawConnection:
        """A dial from ``source`` (DCUtR hole punching dials from the listen port,
        p2p/holepunch.py); protected like every other raw connection."""
        conn = await super().dial_with_source(maddr, source)
        try:
            peer = str(maddr.value_for_protocol("p2p") or maddr)
        except Exception:  # no /p2p/ part: name the address instead
            peer = str(maddr)
        return protect(conn, self._key, initiator=True, peer=peer, audit=self._audit)

    def create_listener(
        self, handler_function: Callable[[IRawConnection], Awaitable[None]]
    ) -> TCPListener:
        key, audit = self._key, self._audit

        async def checked(conn: ReadWriteCloser) -> None:
            await handler_function(protect(conn, key, initiator=False, peer=_remote(conn),
                                           audit=audit))

        return TCPListener(checked)

