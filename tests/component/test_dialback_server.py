"""DialBackServer over in-memory streams with a scripted dialler: who gets dialled
back, at which addresses, and what is refused (relayed requests, asking for another
peer, too many requests, no TCP address)."""

from __future__ import annotations

import multiaddr
import trio

from peerllm.errors import PeerUnavailable
from peerllm.p2p import dialback as wire
from peerllm.p2p.limits import PeerRate
from peerllm.p2p.reachability import DialBackServer, Observed
from peerllm.testing import memory_peer_pair

ASKER = "12D3KooWJXXh2Zf3JeuHfUzL9TUqYESYAsEhA5Bo3GnhfBqyKGzY"
OTHER = "12D3KooWBmkHBaqhNpmGSR4ymHV1tWKAZzJo7ibM3zoY1vtPbJEm"
PUBLIC = Observed("198.51.100.11", relayed=False)


def _id(peer: str) -> bytes:
    from libp2p.peer.id import ID

    return ID.from_base58(peer).to_bytes()


class Dialler:
    """Reaches only the addresses in ``open``; records every dial."""

    def __init__(self, *open_addrs: str) -> None:
        self.open = set(open_addrs)
        self.dialled: list[tuple[str, str]] = []

    async def __call__(self, peer: str, addr: multiaddr.Multiaddr) -> None:
        self.dialled.append((peer, str(addr)))
        if str(addr) not in self.open:
            raise PeerUnavailable(peer, f"dial-back to {addr} failed: refused")


async def _ask(server: DialBackServer, *, asked_for: str = ASKER, observed: Observed = PUBLIC,
               ports: tuple[int, ...] = (4001,)) -> wire.Message:
    client, served = memory_peer_pair(client=ASKER)
    addrs = [multiaddr.Multiaddr(f"/ip4/10.0.1.2/tcp/{p}").to_bytes() for p in ports]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, served, observed)
        await client.send_all(wire.encode_dial(_id(asked_for), addrs))
        reply = await wire.read_message(client)
    return reply


def _server(dial: Dialler, per_s: float = 100.0) -> DialBackServer:
    return DialBackServer(dial, rate=PeerRate(per_s, max_peers=8))


async def test_reachable_requester_gets_ok_with_the_address() -> None:
    dial = Dialler("/ip4/198.51.100.11/tcp/4002")
    reply = await _ask(_server(dial), ports=(4001, 4002))
    assert reply.dialResponse.status == wire.OK
    assert str(multiaddr.Multiaddr(reply.dialResponse.addr)) == "/ip4/198.51.100.11/tcp/4002"
    assert dial.dialled == [(ASKER, "/ip4/198.51.100.11/tcp/4001"),
                            (ASKER, "/ip4/198.51.100.11/tcp/4002")]


async def test_unreachable_requester_gets_dial_error_naming_the_address() -> None:
    reply = await _ask(_server(Dialler()))
    assert reply.dialResponse.status == wire.E_DIAL_ERROR
    assert "198.51.100.11/tcp/4001" in reply.dialResponse.statusText


async def test_silent_address_times_out_within_the_budget(
        autojump_clock: trio.testing.MockClock) -> None:
    async def hang(peer: str, addr: multiaddr.Multiaddr) -> None:
        await trio.sleep_forever()

    reply = await _ask(DialBackServer(hang, rate=PeerRate(100, max_peers=8)))
    assert reply.dialResponse.status == wire.E_DIAL_ERROR
    assert "no answer" in reply.dialResponse.statusText


async def test_refusals_dial_nobody() -> None:
    dial = Dialler("/ip4/198.51.100.11/tcp/4001")
    server = _server(dial)
    relayed = await _ask(server, observed=Observed(None, relayed=True))
    assert relayed.dialResponse.status == wire.E_DIAL_REFUSED
    someone_else = await _ask(server, asked_for=OTHER)
    assert someone_else.dialResponse.status == wire.E_BAD_REQUEST
    no_tcp = await _ask(server, ports=())
    assert no_tcp.dialResponse.status == wire.E_DIAL_REFUSED
    assert dial.dialled == []
    assert server.refused == 3


async def test_a_peer_asking_too_often_is_refused() -> None:
    dial = Dialler("/ip4/198.51.100.11/tcp/4001")
    server = _server(dial, per_s=0.1)
    assert (await _ask(server)).dialResponse.status == wire.OK
    again = await _ask(server)
    assert again.dialResponse.status == wire.E_DIAL_REFUSED
    assert "too many" in again.dialResponse.statusText
    assert len(dial.dialled) == 1
