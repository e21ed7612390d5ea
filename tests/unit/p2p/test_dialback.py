"""The AutoNAT v1 codec and the dial-back address rules (p2p/dialback.py): round trips
byte at a time, bounded messages, only the observed IP ever dialled."""

from __future__ import annotations

import multiaddr
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from peerllm.errors import RemoteProtocolError
from peerllm.p2p import dialback as wire
from peerllm.testing import memory_peer_pair

ADDR = multiaddr.Multiaddr("/ip4/10.0.1.2/tcp/4001").to_bytes()


async def _read_from(data: bytes, *, chunk: int) -> wire.Message:
    """Read one message from a stream that delivers ``data`` in ``chunk``-byte writes
    (memory streams buffer without bound, so it is all written first), then ends."""
    ours, theirs = memory_peer_pair()
    for i in range(0, len(data), chunk):
        await theirs.send_all(data[i: i + chunk])
    await theirs.aclose()
    return await wire.read_message(ours)


@given(peer=st.binary(min_size=1, max_size=64),
       addrs=st.lists(st.binary(min_size=1, max_size=40), max_size=8))
def test_dial_round_trips(peer: bytes, addrs: list[bytes]) -> None:
    data = wire.encode_dial(peer, addrs)
    msg = trio.run(lambda: _read_from(data, chunk=len(data)))
    assert msg.type == wire.Message.DIAL
    assert msg.dial.peer.id == peer
    assert list(msg.dial.peer.addrs) == addrs


async def test_response_read_one_byte_at_a_time() -> None:
    data = wire.encode_response(wire.OK, "", ADDR)
    ours, theirs = memory_peer_pair()
    got: list[wire.Message] = []
    async with trio.open_nursery() as nursery:
        async def read() -> None:
            got.append(await wire.read_message(ours))
        nursery.start_soon(read)
        for i in range(len(data)):  # each byte is read before the next is sent
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            await theirs.send_all(data[i: i + 1])
    assert got[0].type == wire.Message.DIAL_RESPONSE
    assert got[0].dialResponse.status == wire.OK
    assert got[0].dialResponse.addr == ADDR


async def test_oversized_message_is_refused_before_it_is_read() -> None:
    prefix = bytes([0x80 | 0x7F, 0x7F])  # 16383 > MAX_MESSAGE_BYTES
    with pytest.raises(RemoteProtocolError, match="limit"):
        await _read_from(prefix, chunk=2)


async def test_endless_length_prefix_and_early_end_are_the_peers_fault() -> None:
    with pytest.raises(RemoteProtocolError, match="prefix too long"):
        await _read_from(b"\xff" * 5, chunk=5)
    with pytest.raises(RemoteProtocolError, match="ended"):
        await _read_from(wire.encode_dial(b"x", [ADDR])[:-1], chunk=64)


async def test_junk_protobuf_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="unparsable"):
        await _read_from(b"\x03\xff\xff\xff", chunk=4)


def test_only_the_observed_ip_is_dialled() -> None:
    addrs = [multiaddr.Multiaddr(a).to_bytes() for a in (
        "/ip4/10.0.1.2/tcp/4001",            # private address: becomes the observed IP
        "/ip4/203.0.113.9/tcp/4001",         # a third party: same port, same result
        "/ip4/10.0.1.2/tcp/4002",
        "/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWJXXh2Zf3JeuHfUzL9TUqYESYAsEhA5Bo3GnhfBqyKGzY"
        "/p2p-circuit",                      # relayed: never
        "/ip4/10.0.1.2/udp/4001/quic-v1",    # not TCP
        "/ip6/::1/tcp/4003",                 # other family
    )] + [b"\x00junk"]
    got = [str(a) for a in wire.dial_candidates(addrs, "198.51.100.11")]
    assert got == ["/ip4/198.51.100.11/tcp/4001", "/ip4/198.51.100.11/tcp/4002"]


def test_dial_candidates_are_capped() -> None:
    addrs = [multiaddr.Multiaddr(f"/ip4/10.0.0.1/tcp/{4000 + i}").to_bytes()
             for i in range(3 * wire.MAX_DIAL_ADDRS)]
    assert len(wire.dial_candidates(addrs, "192.0.2.1")) == wire.MAX_DIAL_ADDRS
