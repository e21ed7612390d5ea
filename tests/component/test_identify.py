"""Asking a peer's identify over memory streams (p2p/identify.py): the answer by its
length even if the peer keeps the stream open, a bare protobuf at end of stream, and a
peer that sends too much or nothing gets a clear error, not a hang."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.utils.varint import encode_uvarint

from peerllm.errors import PeerTimeout, RemoteProtocolError
from peerllm.p2p.identify import (
    IDENTIFY_PROTOCOL_ID,
    MAX_IDENTIFY_BYTES,
    Identifier,
    PeerIdentity,
    fetch_identity,
)
from peerllm.p2p.streams import ByteStream
from peerllm.testing import MemoryNetwork, open_memory_network

TIMEOUT_S = 5.0
ANSWER = Identify(agent_version="go-libp2p/0.41.0", protocols=["/ipfs/id/1.0.0", "/meshsub/1.1.0"])
EXPECTED = PeerIdentity(agent="go-libp2p/0.41.0", protocols=("/ipfs/id/1.0.0", "/meshsub/1.1.0"))


@pytest.fixture
async def net() -> AsyncIterator[MemoryNetwork]:
    async with open_memory_network() as n:
        yield n


async def test_a_trickled_answer_is_read_by_its_length_while_the_stream_stays_open(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork) -> None:
    body = ANSWER.SerializeToString()
    data = bytes(encode_uvarint(len(body))) + body

    async def trickle(stream: ByteStream) -> None:
        for i in range(len(data)):
            await stream.send_all(data[i:i + 1])
            await trio.sleep(0.01)
        await trio.sleep_forever()  # never closes: the length says where it ends

    net.serve("go", IDENTIFY_PROTOCOL_ID, trickle)
    identifier = Identifier(net.opener("us"), timeout_s=TIMEOUT_S)
    assert await identifier.identify("go") == EXPECTED
    assert identifier.cached_protocols("go") is None  # no host cache here


async def test_a_bare_protobuf_is_decoded_at_end_of_stream(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork) -> None:
    async def bare(stream: ByteStream) -> None:
        await stream.send_all(ANSWER.SerializeToString())
        await stream.aclose()

    net.serve("old", IDENTIFY_PROTOCOL_ID, bare)
    assert await fetch_identity(net.opener("us"), "old", timeout_s=TIMEOUT_S) == EXPECTED


async def test_an_endless_answer_is_refused(autojump_clock: trio.abc.Clock,
                                            net: MemoryNetwork) -> None:
    async def flood(stream: ByteStream) -> None:
        head = bytes(encode_uvarint(10 * MAX_IDENTIFY_BYTES))
        await stream.send_all(head)
        while True:
            await stream.send_all(b"\x00" * 4096)

    net.serve("flood", IDENTIFY_PROTOCOL_ID, flood)
    with pytest.raises(RemoteProtocolError, match=f"longer than {MAX_IDENTIFY_BYTES}"):
        await fetch_identity(net.opener("us"), "flood", timeout_s=TIMEOUT_S)


async def test_a_silent_peer_times_out(autojump_clock: trio.abc.Clock,
                                       net: MemoryNetwork) -> None:
    async def silent(stream: ByteStream) -> None:
        await trio.sleep_forever()

    net.serve("mute", IDENTIFY_PROTOCOL_ID, silent)
    with pytest.raises(PeerTimeout) as err:
        await fetch_identity(net.opener("us"), "mute", timeout_s=TIMEOUT_S)
    assert err.value.peer_id == "mute" and err.value.phase == "call"
    assert trio.current_time() == TIMEOUT_S
