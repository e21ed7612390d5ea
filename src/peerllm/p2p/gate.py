"""Network gate: a TCP transport that checks network membership before libp2p sees a byte.

Every PeerLLM connection starts with a fixed-size prelude sent by *both* sides at
once (one round trip, no waiting on each other):

    magic  b"/peerllm/pnet/1\\n"   16 bytes
    mode   0 = open network, 1 = private network          1 byte
    tag    HMAC-SHA256(key, FINGERPRINT_LABEL) or zeros   32 bytes

A mismatch (different key, or only one side has a key) is known to both sides after
that round trip, is logged on both sides as "network key differs" and closes the
socket: py-libp2p's PSK alone turns the same mismatch into a ~30 s hang. The tag is a
fingerprint, not a secret; what keeps outsiders out is the PSK stream cipher the
gate installs right after (py-libp2p's ``PskConn``), under Noise. See
protocols/network-gate.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IRawConnection
from libp2p.security.pnet.protector import new_protected_conn
from libp2p.transport.tcp.tcp import TCP, TCPListener
from multiaddr import Multiaddr

from ..audit import NULL_AUDIT, AuditSink
from ..audit import events as audit_events
from ..errors import NetworkKeyMismatch
from ..security_events import Direction

logger = logging.getLogger(__name__)

MAGIC = b"/peerllm/pnet/1\n"
FINGERPRINT_LABEL = b"peerllm network key fingerprint v1"
PRELUDE_LEN = len(MAGIC) + 1 + 32
GATE_TIMEOUT_S = 3.0
"""How long a fresh TCP connection may take to send its prelude before we drop it."""


class GateRefused(Exception):
    """The prelude exchange failed; ``mismatch`` is True for a different network key."""

    def __init__(self, reason: str, *, mismatch: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mismatch = mismatch


@dataclass(frozen=True)
class NetworkKey:
    """A 32-byte private-network key (or none = the open network)."""

    key: bytes | None = field(repr=False)  # a secret: never in a repr, a log or a traceback

    @classmethod
    def from_hex(cls, text: str | None) -> NetworkKey:
        if text is None:
            return cls(None)
        raw = bytes.fromhex(text)
        if len(raw) != 32:
            raise ValueError("network key must be 64 hex characters (32 bytes)")
        return cls(raw)

    @property
    def fingerprint(self) -> bytes:
        if self.key is None:
            return bytes(32)
        return hmac.new(self.key, FINGERPRINT_LABEL, hashlib.sha256).digest()

    def describe(self) -> str:
        """Short, non-secret description for logs: 'open' or 'private:ab12cd34'."""
        return "open" if self.key is None else f"private:{self.fingerprint[:4].hex()}"

    def prelude(self) -> bytes:
        return MAGIC + (b"\x01" if self.key is not None else b"\x00") + self.fingerprint


def check_prelude(ours: NetworkKey, theirs: bytes) -> None:
    """Raise GateRefused unless ``theirs`` is a prelude for the same network as ``ours``."""
    if len(theirs) != PRELUDE_LEN or not theirs.startswith(MAGIC):
        raise GateRefused("peer did not send a PeerLLM network prelude", mismatch=False)
    mode, tag = theirs[len(MAGIC)], theirs[len(MAGIC) + 1 :]
    if mode not in (0, 1):
        raise GateRefused(f"peer sent unknown network mode {mode}", mismatch=False)
    their_desc = "open" if mode == 0 else f"private:{tag[:4].hex()}"
    if (mode == 1) != (ours.key is not None) or not hmac.compare_digest(tag, ours.fingerprint):
        raise GateRefused(
            f"network key differs (ours {ours.describe()}, theirs {their_desc})", mismatch=True
        )


async def _read_exactly(conn: IRawConnection, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await conn.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def _exchange(conn: IRawConnection, key: NetworkKey) -> IRawConnection:
    """Run the prelude exchange on a raw connection; return the protected connection."""
    with trio.move_on_after(GATE_TIMEOUT_S) as scope:
        await conn.write(key.prelude())
        theirs = await _read_exactly(conn, PRELUDE_LEN)
    if scope.cancelled_caught:
        raise GateRefused(f"no network prelude within {GATE_TIMEOUT_S} s", mismatch=False)
    check_prelude(key, theirs)
    if key.key is None:
        return conn
    return new_protected_conn(conn, key.key.hex())


def _remote(conn: IRawConnection) -> str:
    addr = conn.get_remote_address()
    return f"{addr[0]}:{addr[1]}" if addr else "?"


class GatedTCP(TCP):
    """libp2p TCP transport whose connections must pass the network gate first."""

    def __init__(self, key: NetworkKey, *, audit: AuditSink = NULL_AUDIT) -> None:
        super().__init__()
        self._key = key
        self._audit = audit

    async def dial(self, maddr: Multiaddr) -> IRawConnection:
        conn = await super().dial(maddr)
        try:
            return await _exchange(conn, self._key)
        except GateRefused as exc:
            await _close_quietly(conn)
            peer = str(maddr.value_for_protocol("p2p") or maddr)
            if exc.mismatch:
                logger.warning("refused connection to %s: %s", maddr, exc.reason)
                audit_events.network_key_mismatch(self._audit, peer=peer,
                                                  direction=Direction.OUTBOUND,
                                                  reason=exc.reason)
                raise NetworkKeyMismatch(peer, exc.reason) from exc
            logger.info("dial to %s failed at the network gate: %s", maddr, exc.reason)
            raise
        except BaseException:
            await _close_quietly(conn)
            raise

    def create_listener(
        self, handler_function: Callable[[IRawConnection], Awaitable[None]]
    ) -> TCPListener:
        key, audit = self._key, self._audit

        async def gated(conn: IRawConnection) -> None:
            try:
                protected = await _exchange(conn, key)
            except GateRefused as exc:
                log = logger.warning if exc.mismatch else logger.info
                log("refused inbound connection from %s: %s", _remote(conn), exc.reason)
                if exc.mismatch:
                    audit_events.network_key_mismatch(audit, peer=_remote(conn),
                                                      direction=Direction.INBOUND,
                                                      reason=exc.reason)
                await _close_quietly(conn)
                return
            except Exception as exc:  # a broken socket during the prelude: nothing to serve
                logger.debug("inbound connection from %s died in the gate: %r", _remote(conn), exc)
                await _close_quietly(conn)
                return
            await handler_function(protected)

        return TCPListener(gated)


async def _close_quietly(conn: IRawConnection) -> None:
    with trio.move_on_after(1, shield=True):
        try:
            await conn.close()
        except Exception:  # closing a socket that is already gone
            logger.debug("close after gate failure raised", exc_info=True)
