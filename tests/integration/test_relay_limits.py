"""A relay's limits between real nodes on 127.0.0.1, and the py-libp2p 0.8.1 relay
deviations p2p/hop.py fixes (protocols/relay.md, "py-libp2p 0.8.1")."""

from __future__ import annotations

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeerId
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

import peerllm
from peerllm.errors import PeerConnectionLost, RelayRefused
from peerllm.node import Node
from peerllm.p2p.hop import HOP_PROTOCOL_ID, STOP_PROTOCOL_ID_STR
from peerllm.p2p.streams import ByteStream
from tests.helpers import MakeConfig, wait_until
from tests.integration.test_relay import relay_and_private

ECHO = "/peerllm-test/echo/1"
# Where a test cuts a circuit: no heartbeat redials the peer it lost, so no dial is still
# in flight when the nodes close (py-libp2p can leave a cancelled dial's socket open).
QUIET = {"heartbeat_interval_s": 60.0}


async def echo(stream: ByteStream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def echo_through(stream: ByteStream, size: int) -> None:
    """Send ``size`` bytes and read them back (one direction's budget each way)."""
    chunk = b"x" * 16384
    sent = got = 0
    while got < size:
        if sent < size:
            await stream.send_all(chunk[:size - sent])
            sent += min(len(chunk), size - sent)
        got += len(await stream.receive_some())


def circuit_of(r: Node, c: Node) -> str:
    return f"{r.addrs()[0]}/p2p-circuit/p2p/{c.peer_id}"


async def test_the_byte_limit_is_per_direction_and_cuts_the_circuit(
        make_config: MakeConfig) -> None:
    async with relay_and_private(make_config, r_p2p={"relay_circuit_bytes": 300_000},
                                 c_p2p=QUIET) as (r, c), \
            peerllm.open_node(make_config("a", dht=False, hole_punch=False, **QUIET)) as a:
        c.host.set_handler(ECHO, echo)
        await a.host.connect(c.peer_id, [circuit_of(r, c)])
        stream = await a.host.open_stream(c.peer_id, ECHO)
        # 200 kB each way fits a 300 kB budget per direction (py-libp2p 0.8.1 shares one
        # budget between both directions: 400 kB would be cut).
        with trio.fail_after(20):
            await echo_through(stream, 200_000)
        with pytest.raises(PeerConnectionLost):  # the next 200 kB cannot pass
            await echo_through(stream, 200_000)
        await wait_until(lambda: not a.host.is_connected(c.peer_id), what="the cut circuit")


async def test_an_idle_circuit_is_cut_at_the_duration_limit(make_config: MakeConfig) -> None:
    async with relay_and_private(make_config, r_p2p={"relay_circuit_duration_s": 1.0},
                                 c_p2p=QUIET) as (r, c), \
            peerllm.open_node(make_config("a", dht=False, hole_punch=False, **QUIET)) as a:
        await a.host.connect(c.peer_id, [circuit_of(r, c)])
        await wait_until(lambda: not a.host.is_connected(c.peer_id), timeout_s=15,
                         what="the circuit cut after 1 s")
        assert r.host.relay is not None and r.host.relay.service.circuits == 0


async def test_the_circuit_cap_refuses_one_more(make_config: MakeConfig) -> None:
    async with relay_and_private(make_config, r_p2p={"relay_max_circuits": 1}) as (r, c), \
            peerllm.open_node(make_config("a", dht=False, hole_punch=False)) as a, \
            peerllm.open_node(make_config("b", dht=False, hole_punch=False)) as b:
        await a.host.connect(c.peer_id, [circuit_of(r, c)])
        with pytest.raises(RelayRefused, match="RESOURCE_LIMIT_EXCEEDED"):
            await b.host.connect(c.peer_id, [circuit_of(r, c)])
        assert r.host.relay is not None and r.host.relay.service.refused == 1
        assert a.host.is_connected(c.peer_id)  # the running circuit is untouched


async def test_a_reservation_is_for_the_connections_peer_not_the_one_it_names(
        make_config: MakeConfig) -> None:
    async with relay_and_private(make_config) as (r, c), \
            peerllm.open_node(make_config("d", dht=False, hole_punch=False)) as d:
        await d.host.connect(r.peer_id, [r.addrs()[0]])
        raw = await d.host.libp2p.new_stream(ID.from_base58(r.peer_id),
                                             [TProtocol(HOP_PROTOCOL_ID)])
        await write_delimited_msg(raw, HopMessage(
            type=HopMessage.RESERVE, peer=PbPeerId(id=ID.from_base58(c.peer_id).to_bytes())))
        with trio.fail_after(10):
            reply = await read_delimited_msg(raw, HopMessage)
        await raw.close()
        assert reply.status == 100
        assert r.host.relay is not None
        held = set(map(str, r.host.relay.service.resource_manager._reservations))
        assert held == {c.peer_id, d.peer_id}


async def test_hostile_hop_and_stop_streams_leave_the_relay_serving(
        make_config: MakeConfig) -> None:
    async with relay_and_private(make_config) as (r, c), \
            peerllm.open_node(make_config("h", dht=False)) as h:
        await h.host.connect(r.peer_id, [r.addrs()[0]])
        await h.host.connect(c.peer_id, [c.addrs()[0]])
        # Junk on the relay's hop protocol, a STOP that claims a circuit on C.
        for peer, proto in ((r.peer_id, HOP_PROTOCOL_ID), (c.peer_id, STOP_PROTOCOL_ID_STR)):
            raw = await h.host.libp2p.new_stream(ID.from_base58(peer), [TProtocol(proto)])
            await raw.write(b"\x05junk!" * 10)
            with trio.fail_after(5):  # answered and ended, not left open
                try:
                    while await raw.read(1024):
                        pass
                except Exception:  # reset by the other side: what we expect
                    pass
        # Both still do their jobs: a fresh node reaches C through R.
        async with peerllm.open_node(make_config("a", dht=False)) as a:
            await a.host.connect(c.peer_id, [circuit_of(r, c)])
            assert a.host.is_connected(c.peer_id)
