"""The TLS side channel on 127.0.0.1: the pinned certificate and the one-time token admit
only the peer that got the offer, bytes cross in worker threads, and cancelling a
blocked call closes the socket."""

from __future__ import annotations

import functools
import os
import socket
import ssl

import pytest
import trio

from peerllm.errors import PeerConnectionLost, PeerUnavailable
from peerllm.p2p.sidechannel import (
    SideCertificate,
    SideConnection,
    SideListener,
    dial,
    recv_exact,
)

PEER = "peer"


@pytest.fixture(scope="module")
def cert() -> SideCertificate:
    return SideCertificate.generate()


async def _pair(listener: SideListener, *, token: bytes | None = None
                ) -> tuple[SideConnection, SideConnection]:
    accepted: list[SideConnection] = []
    async with trio.open_nursery() as nursery:
        async def accept() -> None:
            accepted.append(await listener.accept())
        nursery.start_soon(accept)
        dialled = await dial("127.0.0.1", listener.port, cert_sha256=listener.cert_sha256,
                             token=token or listener.token, peer_id=PEER)
    return accepted[0], dialled


def _send(data: bytes, sock: ssl.SSLSocket) -> None:
    sock.sendall(data)


def _recv(n: int, sock: ssl.SSLSocket) -> bytes:
    return bytes(recv_exact(sock, n))


async def test_bytes_cross_the_pinned_channel(cert: SideCertificate) -> None:
    data = os.urandom(10 * 1024 * 1024 + 7)
    with await SideListener.open("127.0.0.1", cert, peer_id=PEER) as listener:
        server, client = await _pair(listener)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(server.call, functools.partial(_send, data),
                                             what="send"))
        got.append(await client.call(functools.partial(_recv, len(data)), what="receive"))
    assert got == [data]
    server.close()
    client.close()


async def test_a_certificate_other_than_the_pinned_one_is_refused(cert: SideCertificate
                                                                  ) -> None:
    with await SideListener.open("127.0.0.1", cert, peer_id=PEER) as listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.accept)
            with pytest.raises(PeerUnavailable, match="not the one offered"):
                await dial("127.0.0.1", listener.port, cert_sha256=b"\x00" * 32,
                           token=listener.token, peer_id=PEER)
            nursery.cancel_scope.cancel()


async def test_a_wrong_token_is_dropped_and_the_right_one_still_gets_in(
        cert: SideCertificate) -> None:
    with await SideListener.open("127.0.0.1", cert, peer_id=PEER) as listener:
        accepted: list[SideConnection] = []
        async with trio.open_nursery() as nursery:
            async def accept() -> None:
                accepted.append(await listener.accept())
            nursery.start_soon(accept)
            stranger = await dial("127.0.0.1", listener.port,
                                  cert_sha256=listener.cert_sha256, token=b"x" * 32,
                                  peer_id=PEER)
            with pytest.raises(PeerConnectionLost):  # the server closed it
                await stranger.call(functools.partial(_recv, 1), what="receive")
            good = await dial("127.0.0.1", listener.port, cert_sha256=listener.cert_sha256,
                              token=listener.token, peer_id=PEER)
        assert len(accepted) == 1
        accepted[0].close()
        good.close()


async def test_cancelling_a_blocked_call_closes_the_socket(cert: SideCertificate) -> None:
    with await SideListener.open("127.0.0.1", cert, peer_id=PEER) as listener:
        server, client = await _pair(listener)
    with trio.move_on_after(0.5) as scope:  # the server never sends
        await client.call(functools.partial(_recv, 100), what="receive")
    assert scope.cancelled_caught
    with pytest.raises(PeerConnectionLost):
        await client.call(functools.partial(_recv, 1), what="receive")
    with pytest.raises(PeerConnectionLost):  # the server sees the end
        await server.call(functools.partial(_recv, 1), what="receive")
    server.close()


async def test_nothing_listens_after_the_offer_is_over(cert: SideCertificate) -> None:
    with await SideListener.open("127.0.0.1", cert, peer_id=PEER) as listener:
        port = listener.port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port),
                                                                         timeout=2):
        pass

