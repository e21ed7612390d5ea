"""Real libp2p hosts on 127.0.0.1: plain libp2p on the wire, the pnet spec in a private
network, fast and clear refusal of another network, identify + ping, and our DHT id."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.peer.id import ID
from libp2p.utils.varint import read_length_prefixed_protobuf

import peerllm
from peerllm.errors import NetworkKeyMismatch, PeerUnavailable
from peerllm.p2p.dht import DHT_PROTOCOL_ID, Dht, open_dht
from peerllm.p2p.host import P2PHost, open_host
from peerllm.p2p.pnet import NONCE_LEN, XSalsa20
from peerllm.p2p.transport import MULTISTREAM_HEADER, OLD_PRELUDE_MAGIC
from peerllm.testing import make_identity
from tests.helpers import free_port, wait_for_value, wait_until

K1, K2 = "11" * 32, "22" * 32


@asynccontextmanager
async def host(name: str, key: str | None = None) -> AsyncIterator[P2PHost]:
    async with open_host(make_identity(name), listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"],
                         network_key=key) as h:
        yield h


@asynccontextmanager
async def dht_host(name: str, key: str | None = None) -> AsyncIterator[tuple[P2PHost, Dht]]:
    identity = make_identity(name)
    async with open_host(identity, listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"],
                         network_key=key) as h, open_dht(h, identity) as dht:
        yield h, dht


def tcp_port(h: P2PHost) -> int:
    parts = h.addrs()[0].split("/")
    return int(parts[parts.index("tcp") + 1])


async def first_bytes(h: P2PHost, n: int) -> bytes:
    """What ``h`` sends a fresh TCP connection before hearing anything."""
    stream = await trio.open_tcp_stream("127.0.0.1", tcp_port(h))
    try:
        buf = b""
        with trio.fail_after(5):
            while len(buf) < n:
                chunk = await stream.receive_some(n - len(buf))
                assert chunk, buf
                buf += chunk
        return buf
    finally:
        await stream.aclose()


async def test_an_open_node_speaks_multistream_select_first() -> None:
    async with host("a") as a:
        assert await first_bytes(a, len(MULTISTREAM_HEADER)) == MULTISTREAM_HEADER


async def test_a_private_node_sends_a_nonce_then_xsalsa20() -> None:
    async with host("a", K1) as a:
        wire = await first_bytes(a, NONCE_LEN + len(MULTISTREAM_HEADER))
    plain = XSalsa20(bytes.fromhex(K1), wire[:NONCE_LEN]).xor(wire[NONCE_LEN:])
    assert plain == MULTISTREAM_HEADER


@pytest.mark.parametrize("key", [None, K1])
async def test_identify_names_peerllm_and_ping_answers(key: str | None) -> None:
    async with dht_host("a", key) as (a, _), dht_host("b", key) as (b, _):
        await b.connect(a.peer_id, a.addrs())
        raw = await b.libp2p.new_stream(ID.from_base58(a.peer_id), [IDENTIFY_ID])
        answer = Identify()
        with trio.fail_after(5):
            answer.ParseFromString(await read_length_prefixed_protobuf(raw))
        assert answer.agent_version == f"peerllm/{peerllm.__version__}"
        assert {"/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", DHT_PROTOCOL_ID} <= set(answer.protocols)
        assert "/ipfs/kad/1.0.0" not in answer.protocols
        ping = await b.open_stream(a.peer_id, "/ipfs/ping/1.0.0")
        payload = os.urandom(32)
        await ping.send_all(payload)
        with trio.fail_after(5):
            assert await ping.receive_some(32) == payload
        await ping.aclose()


async def test_the_dht_speaks_peerllm_kad_only_and_still_finds_records() -> None:
    async with dht_host("a") as (a, dht_a), dht_host("b") as (b, dht_b):
        await b.connect(a.peer_id, a.addrs())
        await dht_b.add_peer(a.peer_id)
        await dht_a.add_peer(b.peer_id)
        with pytest.raises(PeerUnavailable, match="protocol not supported"):
            await b.open_stream(a.peer_id, "/ipfs/kad/1.0.0")
        kad = await b.open_stream(a.peer_id, DHT_PROTOCOL_ID)
        await kad.aclose()
        await dht_a.publish(addrs=a.addrs(), models=["tiny"], ttl_s=600)
        record = await wait_for_value(lambda: dht_b.find_node(a.peer_id),
                                      what="b to find a's node record")
        assert record.addrs == tuple(a.addrs())


async def test_a_node_with_an_empty_table_still_answers_for_its_own_records() -> None:
    # A js-libp2p client that only dials never enters our table, yet asks GET_VALUE.
    async with dht_host("a") as (a, dht_a), dht_host("b") as (b, dht_b):
        await b.connect(a.peer_id, a.addrs())
        await dht_b.add_peer(a.peer_id)  # b knows a; a's table stays empty
        assert dht_a.routing_peers() == []
        dht_a.store_local(addrs=a.addrs(), models=["tiny"], ttl_s=600)
        record = await wait_for_value(lambda: dht_b.find_node(a.peer_id),
                                      what="b to read a's node record from a")
        assert (record.addrs, record.models) == (tuple(a.addrs()), ("tiny",))


@pytest.mark.parametrize(("ours", "theirs", "cause"), [
    (K1, K2, "holds another key"),
    (None, K1, "probably in a private network"),
    (K1, None, "in the open network (no network key)"),
])
async def test_another_network_is_refused_fast_and_clearly(
        ours: str | None, theirs: str | None, cause: str,
        caplog: pytest.LogCaptureFixture) -> None:
    async with host("a", ours) as a, host("b", theirs) as b:
        # Well under a 30 s negotiation timeout: refused on the first bytes.
        with caplog.at_level(logging.WARNING), trio.fail_after(5), \
                pytest.raises(NetworkKeyMismatch, match="network key differs") as info:
            await b.connect(a.peer_id, a.addrs())
        assert info.value.peer_id == a.peer_id
        await wait_until(lambda: "refused inbound connection" in caplog.text,
                         what="a's WARNING")
        assert not b.is_connected(a.peer_id)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith(f"refused connection to {a.peer_id}: network key differs")
               for w in warnings), warnings
    assert any("refused inbound connection from 127.0.0.1:" in w and cause in w
               for w in warnings), warnings
    assert K1 not in caplog.text and K2 not in caplog.text


async def test_dialling_an_older_peerllm_names_it(caplog: pytest.LogCaptureFixture) -> None:
    async def old_peer(stream: trio.SocketStream) -> None:
        await stream.send_all(OLD_PRELUDE_MAGIC + bytes(33))  # what it sent before #11
        with trio.move_on_after(5):
            try:
                while await stream.receive_some():
                    pass
            except trio.BrokenResourceError:  # refused: reset with our bytes unread
                pass

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, old_peer, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        old_id = make_identity("old").peer_id
        async with host("b") as b:
            with trio.fail_after(5), pytest.raises(NetworkKeyMismatch, match="older PeerLLM"):
                await b.connect(old_id, [f"/ip4/127.0.0.1/tcp/{port}/p2p/{old_id}"])
        nursery.cancel_scope.cancel()
    assert "refused connection to" in caplog.text and "/peerllm/pnet/1" in caplog.text
