"""The bulk data path of /peerllm/blob: a TLS 1.3 side channel next to the libp2p stream.

libp2p streams move ~110-240 MB/s at 4-8 CPU s/GB per side here; blocking ``ssl`` in a
worker thread moves ~1 GB/s at ~0.9 (../shared/notes/bulk-transfer-2026-12.md). So the
serving node offers, over the Noise-authenticated stream, a listener's port, the SHA-256
of a throwaway self-signed certificate and a one-time token; the downloader dials, runs
TLS pinned to that hash and sends the token first. The token reached only the peer Noise
authenticated and the pin came from it, so both ends are bound to those peer ids.

Each connection is driven from worker threads (``trio.to_thread``) with large blocking
``sendall``/``recv_into`` calls; cancelling a call shuts the socket down, which ends the
thread's blocking call (the thread then closes the socket itself).
"""

from __future__ import annotations

import datetime
import hmac
import logging
import re
import secrets
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Final, TypeVar

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import PeerConnectionLost, PeerTimeout, PeerUnavailable
from ..wire.blob import TOKEN_BYTES

logger = logging.getLogger(__name__)

T = TypeVar("T")

DIAL_TIMEOUT_S: Final = 2.0
"""TCP connect + TLS handshake + token: past this the client falls back to in-stream."""
ACCEPT_TIMEOUT_S: Final = DIAL_TIMEOUT_S + 3.0
"""How long an offer's listener waits for the right token (the client's fallback frame
normally ends the wait sooner)."""
IO_TIMEOUT_S: Final = 60.0
"""A blocking send or receive that makes no progress this long fails (a dead peer must
not pin a worker thread forever; a stall is normally the caller's cancel much sooner)."""
MAX_ACCEPTS: Final = 8
"""Connections one offer inspects before it gives up (a stranger racing the real dial)."""


@dataclass(frozen=True)
class SideCertificate:
    """A throwaway self-signed certificate: the server's TLS context and its pin."""

    context: ssl.SSLContext
    sha256: bytes

    @classmethod
    def generate(cls) -> SideCertificate:
        """Blocking (key generation, temp files): call it in a worker thread."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerllm-blob")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(key, hashes.SHA256()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        # load_cert_chain reads files only; they live for this call in a private dir.
        with tempfile.TemporaryDirectory(prefix="peerllm-blob-") as tmp:
            pem = Path(tmp) / "cert.pem"
            pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            ctx.load_cert_chain(pem)
        return cls(ctx, sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # no names and no CA: the certificate hash is pinned instead
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tune(sock: socket.socket) -> None:
    # No SO_SNDBUF/SO_RCVBUF: setting them turns off the kernel's buffer autotuning,
    # which grows further than a fixed size can (and rmem_max caps it at ~208 KiB on
    # many systems).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def recv_exact(sock: ssl.SSLSocket, length: int) -> bytearray:
    """Exactly ``length`` bytes (blocking). Raises ConnectionError at an early end."""
    buf = bytearray(length)
    view = memoryview(buf)
    got = 0
    while got < length:
        n = sock.recv_into(view[got:], length - got)
        if n == 0:
            raise ConnectionError(f"side channel ended after {got} of {length} bytes")
        got += n
    return buf


class SideConnection:
    """One TLS connection of the side channel, used from one worker thread at a time."""

    def __init__(self, sock: ssl.SSLSocket, *, peer_id: str) -> None:
        self._sock = sock
        self._peer = peer_id
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False

    async def call(self, fn: Callable[[ssl.SSLSocket], T], *, what: str) -> T:
        """``fn(sock)`` in a worker thread.

        Raises:
            PeerTimeout: no progress for IO_TIMEOUT_S.
            PeerConnectionLost: the connection broke or ended early (``what`` says where).

        Cancellation: shuts the socket down (the thread's call fails at once) and
        re-raises; the connection is unusable afterwards.
        """
        try:
            return await trio.to_thread.run_sync(self._run, fn, abandon_on_cancel=True)
        except trio.Cancelled:
            self._abort()
            raise
        except TimeoutError as exc:
            self._abort()
            raise PeerTimeout(self._peer, f"side channel {what}: no progress in "
                              f"{IO_TIMEOUT_S:g} s", phase="call") from exc
        except (OSError, ssl.SSLError) as exc:
            self._abort()
            raise PeerConnectionLost(self._peer, f"side channel {what} failed: {exc}") from exc

    def _run(self, fn: Callable[[ssl.SSLSocket], T]) -> T:
        with self._lock:
            if self._closed:
                raise ConnectionError("side channel already closed")
            self._busy = True
        try:
            return fn(self._sock)
        finally:
            with self._lock:
                self._busy = False
                if self._closed:  # closed (or aborted) while we ran: ours to release
                    self._sock.close()

    def _abort(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if not self._busy:
                self._sock.close()

    def close(self) -> None:
        """Close now, or as soon as a running thread returns; never raises."""
        self._abort()


class SideListener:
    """One offer's listener: an ephemeral port on ``host`` that accepts one connection
    bearing ``token``. Close it when the offer is over (``with``)."""

    def __init__(self, sock: trio.socket.SocketType, cert: SideCertificate, *, peer_id: str
                 ) -> None:
        self._sock = sock
        self._cert = cert
        self._peer = peer_id
        self.port: int = sock.getsockname()[1]
        self.cert_sha256 = cert.sha256
        self.token = secrets.token_bytes(TOKEN_BYTES)

    @classmethod
    async def open(cls, host: str, cert: SideCertificate, *, peer_id: str) -> SideListener:
        """Raises OSError when ``host`` cannot be bound (the caller then streams in-stream)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.bind((host, 0))
            sock.listen(1)
        except OSError:
            sock.close()
            raise
        return cls(sock, cert, peer_id=peer_id)

    def __enter__(self) -> SideListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    async def accept(self) -> SideConnection:
        """The connection that sent our token (strangers are dropped, MAX_ACCEPTS at most).

        Raises:
            PeerTimeout: no such connection within ACCEPT_TIMEOUT_S.
        """
        with trio.move_on_after(ACCEPT_TIMEOUT_S):
            for _ in range(MAX_ACCEPTS):
                conn, _addr = await self._sock.accept()
                raw = socket.socket(fileno=conn.detach())
                got = await trio.to_thread.run_sync(self._admit, raw)
                if got is not None:
                    return SideConnection(got, peer_id=self._peer)
        raise PeerTimeout(self._peer, "no side-channel connection with the offered token",
                          phase="dial")

    def _admit(self, raw: socket.socket) -> ssl.SSLSocket | None:
        sock: socket.socket = raw  # the TLS socket once wrapped (it takes over the fd)
        try:
            raw.setblocking(True)
            raw.settimeout(DIAL_TIMEOUT_S)
            _tune(raw)
            tls = sock = self._cert.context.wrap_socket(raw, server_side=True)
            if not hmac.compare_digest(bytes(recv_exact(tls, TOKEN_BYTES)), self.token):
                logger.info("side channel: dropped a connection with a wrong token")
                tls.close()
                return None
            tls.settimeout(IO_TIMEOUT_S)
            return tls
        except (OSError, ssl.SSLError) as exc:
            logger.debug("side channel: dropped a connection: %s", exc)
            sock.close()
            return None


def _check_pin(tls: ssl.SSLSocket, cert_sha256: bytes) -> None:
    der = tls.getpeercert(binary_form=True) or b""
    if not hmac.compare_digest(sha256(der).digest(), cert_sha256):
        raise ssl.SSLError("the side channel's certificate is not the one offered")


async def dial(host: str, port: int, *, cert_sha256: bytes, token: bytes, peer_id: str
               ) -> SideConnection:
    """Connect, run TLS pinned to ``cert_sha256`` and send ``token`` within DIAL_TIMEOUT_S.

    Raises:
        PeerUnavailable: not reachable in time, TLS failed, or the certificate is not the
            pinned one (the caller falls back to in-stream).

    Cancellation: the thread finishes within DIAL_TIMEOUT_S and closes what it opened.
    """
    lock = threading.Lock()
    abandoned = False
    made: list[ssl.SSLSocket] = []  # the socket, once the thread has it

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection((host, port), timeout=DIAL_TIMEOUT_S)
        sock: socket.socket = raw  # the TLS socket once wrapped (it takes over the fd)
        try:
            _tune(raw)
            tls = sock = _client_context().wrap_socket(raw)
            _check_pin(tls, cert_sha256)
            tls.sendall(token)
            tls.settimeout(IO_TIMEOUT_S)
        except BaseException:
            sock.close()
            raise
        with lock:  # whoever comes second closes it: the thread, or the cancelled caller
            if abandoned:
                tls.close()
            else:
                made.append(tls)
        return tls

    try:
        sock = await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
    except trio.Cancelled:
        with lock:
            abandoned = True
            for tls in made:  # the thread finished as we were cancelled
                tls.close()
        raise
    except (OSError, ssl.SSLError) as exc:
        raise PeerUnavailable(peer_id, f"side channel {host}:{port} not usable: {exc}") from exc
    return SideConnection(sock, peer_id=peer_id)


def connection_ip(host: object, peer_id: str) -> str | None:
    """The IP our libp2p connection to ``peer_id`` uses (``host`` a P2PHost), or None.

    An offer with an empty host means "the address you reach me at".
    """
    try:
        from libp2p.peer.id import ID

        conns = host.libp2p.get_network().connections.get(  # type: ignore[attr-defined]
            ID.from_base58(peer_id))
        conn = conns[0] if isinstance(conns, list) else conns
        for addr in conn.get_transport_addresses():
            for proto in ("ip4", "ip6"):
                try:
                    return str(addr.value_for_protocol(proto))
                except Exception:  # not this family; try the next
                    continue
    except Exception:  # no connection, or an opener that is not a P2PHost
        logger.debug("no connection address for %s", peer_id, exc_info=True)
    return None


def listen_ip(listen: Sequence[str]) -> str | None:
    """The IP of the first TCP listen multiaddr (``p2p.listen``): where a server's side
    channels listen. A wildcard stays a wildcard (offered as "the address you reach me
    at"); None when no address is a plain /ip4 or /ip6 TCP one."""
    for addr in listen:
        match = re.match(r"/ip[46]/([^/]+)/tcp/\d+", addr)
        if match:
            return match.group(1)
    return None
