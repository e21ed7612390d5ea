"""Private networks as libp2p's pnet spec defines them: XSalsa20 under the network key.

Each side of a connection sends a random 24-byte nonce before anything else, then every
byte it sends is XORed with the XSalsa20 keystream of (key, its nonce): one keystream per
direction, nothing else on the wire. That is what go-, rust- and js-libp2p speak
(libp2p/specs pnet/Private-Networks-PSK-V1.md), so a node of any of them holding the
same ``swarm.key`` joins. py-libp2p 0.8.1's own PSK (``security/pnet``) uses Salsa20 with
an 8-byte nonce, which no other implementation speaks: it is not used.

This module is the cipher and the framing only; deciding that a peer holds another key
(its first decrypted bytes are not multistream-select) is p2p/transport.py's job.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from Crypto.Cipher import Salsa20
from libp2p.abc import ConnectionType, IRawConnection
from libp2p.io.abc import ReadWriteCloser
from multiaddr import Multiaddr

KEY_LEN = 32
NONCE_LEN = 24
_DESCRIBE_LABEL = b"peerllm network key fingerprint v1"
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class NetworkKey:
    """A 32-byte private-network key (or none = the open network)."""

    key: bytes | None = field(repr=False)  # a secret: never in a repr, a log or a traceback

    @classmethod
    def from_hex(cls, text: str | None) -> NetworkKey:
        if text is None:
            return cls(None)
        raw = bytes.fromhex(text)
        if len(raw) != KEY_LEN:
            raise ValueError("network key must be 64 hex characters (32 bytes)")
        return cls(raw)

    def describe(self) -> str:
        """Short, non-secret description for logs: 'open' or 'private:ab12cd34'.

        The suffix is a keyed hash of a 256-bit key: it tells two keys apart in logs
        and reveals nothing about the key.
        """
        if self.key is None:
            return "open"
        return f"private:{hmac.new(self.key, _DESCRIBE_LABEL, hashlib.sha256).hexdigest()[:8]}"


def _rotl(v: int, c: int) -> int:
    return ((v << c) | (v >> (32 - c))) & _MASK


def _quarter(x: list[int], a: int, b: int, c: int, d: int) -> None:
    x[b] ^= _rotl((x[a] + x[d]) & _MASK, 7)
    x[c] ^= _rotl((x[b] + x[a]) & _MASK, 9)
    x[d] ^= _rotl((x[c] + x[b]) & _MASK, 13)
    x[a] ^= _rotl((x[d] + x[c]) & _MASK, 18)


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """HSalsa20 (Bernstein, "Extending the Salsa20 nonce"): a 32-byte subkey of
    ``key`` and a 16-byte nonce. Pure Python: it runs once per connection."""
    k, n = struct.unpack("<8I", key), struct.unpack("<4I", nonce16)
    x = [_SIGMA[0], k[0], k[1], k[2], k[3], _SIGMA[1], n[0], n[1],
         n[2], n[3], _SIGMA[2], k[4], k[5], k[6], k[7], _SIGMA[3]]
    for _ in range(10):  # 20 rounds = 10 double rounds: columns, then rows
        _quarter(x, 0, 4, 8, 12)
        _quarter(x, 5, 9, 13, 1)
        _quarter(x, 10, 14, 2, 6)
        _quarter(x, 15, 3, 7, 11)
        _quarter(x, 0, 1, 2, 3)
        _quarter(x, 5, 6, 7, 4)
        _quarter(x, 10, 11, 8, 9)
        _quarter(x, 15, 12, 13, 14)
    return struct.pack("<8I", *(x[i] for i in (0, 5, 10, 15, 6, 7, 8, 9)))


class XSalsa20:
    """The XSalsa20 keystream of (key, 24-byte nonce), XORed onto data as it passes."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        if len(key) != KEY_LEN or len(nonce) != NONCE_LEN:
            raise ValueError("XSalsa20 takes a 32-byte key and a 24-byte nonce")
        self._cipher = Salsa20.new(key=hsalsa20(key, nonce[:16]), nonce=nonce[16:])

    def xor(self, data: bytes) -> bytes:
        return self._cipher.encrypt(data)


class NonceUnreadable(Exception):
    """The peer's bytes ended (or reset) before a whole nonce; ``seen`` is what came."""

    def __init__(self, seen: bytes) -> None:
        super().__init__(f"connection ended after {len(seen)} of {NONCE_LEN} nonce bytes")
        self.seen = seen


class WrappedConn(IRawConnection):
    """A raw connection over another (a TCP stream, a relayed circuit) that keeps the
    inner one's addresses and kind, so the swarm still sees where it goes."""

    def __init__(self, conn: ReadWriteCloser, *, initiator: bool) -> None:
        self._conn = conn
        self.is_initiator = initiator

    async def close(self) -> None:
        await self._conn.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        remote: tuple[str, int] | None = self._conn.get_remote_address()
        return remote

    def get_transport_addresses(self) -> list[Multiaddr]:
        if isinstance(self._conn, IRawConnection):
            addrs: list[Multiaddr] = self._conn.get_transport_addresses()
            return addrs
        remote = self.get_remote_address()
        if remote is None:
            return []
        family = "ip6" if ":" in remote[0] else "ip4"
        return [Multiaddr(f"/{family}/{remote[0]}/tcp/{remote[1]}")]

    def get_connection_type(self) -> ConnectionType:
        if isinstance(self._conn, IRawConnection):
            return self._conn.get_connection_type()
        return ConnectionType.DIRECT


class PnetConn(WrappedConn):
    """A raw connection wrapped per the pnet spec.

    Our nonce goes out with our first write and theirs is read by our first read (as
    go-libp2p does): neither side waits on the other, so it cannot deadlock whoever
    speaks first. ``not_a_nonce`` are prefixes that stop the nonce read early: bytes plainly not
    a nonce (a plaintext multistream header), where waiting for all 24 could wait on a
    peer that waits on us.
    """

    def __init__(self, conn: ReadWriteCloser, key: bytes, *, initiator: bool,
                 not_a_nonce: tuple[bytes, ...] = ()) -> None:
        if len(key) != KEY_LEN:
            raise ValueError("a pnet key is 32 bytes")
        super().__init__(conn, initiator=initiator)
        self._key = key
        self._not_a_nonce = not_a_nonce
        self._out: XSalsa20 | None = None
        self._in: XSalsa20 | None = None
        self.their_nonce: bytes | None = None

    async def write(self, data: bytes) -> None:
        if self._out is None:
            nonce = os.urandom(NONCE_LEN)
            self._out = XSalsa20(self._key, nonce)
            await self._conn.write(nonce + self._out.xor(data))
            return
        await self._conn.write(self._out.xor(data))

    async def read(self, n: int | None = None) -> bytes:
        if self._in is None:
            self._in = XSalsa20(self._key, await self._read_nonce())
        data: bytes = await self._conn.read(n)
        return self._in.xor(data) if data else b""

    async def _read_nonce(self) -> bytes:
        seen = b""
        while len(seen) < NONCE_LEN and not self._gave_away(seen):
            try:
                chunk: bytes = await self._conn.read(NONCE_LEN - len(seen))
            except Exception as exc:  # a reset before the nonce: the same story as an EOF
                raise NonceUnreadable(seen) from exc
            if not chunk:
                break
            seen += chunk
        if len(seen) < NONCE_LEN or self._gave_away(seen):
            raise NonceUnreadable(seen)
        self.their_nonce = seen
        return seen

    def _gave_away(self, seen: bytes) -> bool:
        return any(seen.startswith(p) for p in self._not_a_nonce)
