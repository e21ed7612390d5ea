"""NodeInfoClient and serve_node_info over in-memory streams on a virtual clock: signed
answers verified, forged ones refused, bad frames and silent servers handled, the
per-peer request rate."""

from __future__ import annotations

import dataclasses
import functools
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from peerllm.config import NodeConfig
from peerllm.errors import (
    ErrorCode,
    PeerBusy,
    PeerConnectionLost,
    PeerTimeout,
    RemoteProtocolError,
)
from peerllm.identity import Identity
from peerllm.mesh.membership import Membership
from peerllm.p2p.identify import Identifier
from peerllm.p2p.known_peers import KnownPeers
from peerllm.p2p.limits import PeerRate
from peerllm.p2p.nodeinfo import NodeInfoClient, serve_node_info
from peerllm.p2p.registry import PeerRegistry, PeerState, Source
from peerllm.p2p.streams import ByteStream, receive_event
from peerllm.security_events import AuditEvent
from peerllm.testing import MemoryNetwork, make_identity, make_node_info, open_memory_network
from peerllm.wire import nodeinfo as wni
from peerllm.wire.framing import FrameDecoder, encode_frame
from tests.helpers import RecordingAudit

SERVER = make_identity("server", seed=1)
MALLORY = make_identity("mallory", seed=2)
CALL_S = 2.0


def info_of(identity: Identity) -> wni.NodeInfo:
    return make_node_info(identity.peer_id, name=identity.name)


def serve(net: MemoryNetwork, *, signer: Identity, info: wni.NodeInfo) -> None:
    """Answer node-info for SERVER's peer ID, signed by ``signer``."""
    net.serve(SERVER.peer_id, wni.PROTOCOL_ID, functools.partial(
        serve_node_info, identity=signer, current_info=lambda: info))


@pytest.fixture
async def net() -> AsyncIterator[MemoryNetwork]:
    async with open_memory_network() as network:
        yield network


async def test_a_signed_answer_is_verified_and_its_stream_reused(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork) -> None:
    serve(net, signer=SERVER, info=info_of(SERVER))
    client = NodeInfoClient(net.opener("client"), call_timeout_s=CALL_S)
    for _ in range(3):
        info, rtt_ms = await client.fetch(SERVER.peer_id)
        assert (info.peer_id, info.name, rtt_ms) == (SERVER.peer_id, "server", 0.0)
    assert len(net.opened) == 1  # one long-lived stream per peer
    await client.aclose()


@pytest.mark.parametrize(("signer", "info", "why"), [
    # Mallory signs a NodeInfo that claims to be the server.
    (MALLORY, info_of(SERVER), "signed by"),
    # The server signs the right key but someone else's NodeInfo.
    (SERVER, info_of(MALLORY), "names peer"),
])
async def test_a_forged_answer_is_refused_and_the_stream_dropped(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork, signer: Identity,
        info: wni.NodeInfo, why: str) -> None:
    serve(net, signer=signer, info=info)
    audit = RecordingAudit()
    client = NodeInfoClient(net.opener("client"), call_timeout_s=CALL_S, audit=audit)
    for expected_streams in (1, 2):  # a failed call drops the stream; the next opens anew
        with pytest.raises(RemoteProtocolError, match=why) as err:
            await client.fetch(SERVER.peer_id)
        assert err.value.code is ErrorCode.BAD_SIGNATURE
        assert len(net.opened) == expected_streams
    lines = audit.of(AuditEvent.INVALID_RECORD)
    assert [(x["kind"], x["peer"], x["key"]) for x in lines] == [
        ("node_info", SERVER.peer_id, None)] * 2
    assert all(why in str(x["reason"]) for x in lines)


async def test_a_tampered_body_fails_the_signature_check(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork) -> None:
    async def tamper(stream: ByteStream) -> None:
        decoder = FrameDecoder(wni.MAX_INFO_FRAME_BYTES)
        frame = await receive_event(stream, decoder.feed, decoder.next_frame)
        assert isinstance(frame, dict)
        request = wni.message_from_map(frame)
        good = wni.make_response(request.request_id, info_of(SERVER),
                                 public_key=SERVER.public_key, sign=SERVER.sign)
        body = good.body.replace(b"server", b"SERVER")
        await stream.send_all(encode_frame(wni.message_to_map(
            dataclasses.replace(good, body=body)), max_frame_bytes=wni.MAX_INFO_FRAME_BYTES))
        await trio.sleep_forever()

    net.serve(SERVER.peer_id, wni.PROTOCOL_ID, tamper)
    client = NodeInfoClient(net.opener("client"), call_timeout_s=CALL_S)
    with pytest.raises(RemoteProtocolError, match="does not verify"):
        await client.fetch(SERVER.peer_id)


async def test_a_silent_server_times_out(autojump_clock: trio.abc.Clock,
                                         net: MemoryNetwork) -> None:
    async def mute(stream: ByteStream) -> None:
        await trio.sleep_forever()

    net.serve(SERVER.peer_id, wni.PROTOCOL_ID, mute)
    client = NodeInfoClient(net.opener("client"), call_timeout_s=CALL_S)
    start = trio.current_time()
    with pytest.raises(PeerTimeout) as err:
        await client.fetch(SERVER.peer_id)
    assert err.value.phase == "call" and trio.current_time() - start == pytest.approx(CALL_S)


@pytest.mark.parametrize("garbage", [
    struct.pack(">I", 2**31) + b"x",                      # oversized length prefix
    struct.pack(">I", 3) + b"\xc1\xc1\xc1",               # invalid msgpack
    encode_frame({"t": "info_req", "v": 99, "id": 1}),    # unsupported version
    encode_frame({"t": "info_req", "v": 1, "id": True}),  # bool is not an int
])
async def test_bad_frames_get_an_error_and_a_reset_and_the_server_keeps_answering(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork, garbage: bytes) -> None:
    serve(net, signer=SERVER, info=info_of(SERVER))
    raw = await net.opener("mallory").open_stream(SERVER.peer_id, wni.PROTOCOL_ID)
    await raw.send_all(garbage)
    decoder = FrameDecoder(wni.MAX_INFO_FRAME_BYTES)
    frame = await receive_event(raw, decoder.feed, decoder.next_frame)
    assert isinstance(frame, dict)
    assert isinstance(wni.message_from_map(frame), wni.ErrorResponse)
    with pytest.raises(PeerConnectionLost):
        await raw.receive_some()
    client = NodeInfoClient(net.opener("client"), call_timeout_s=CALL_S)
    info, _ = await client.fetch(SERVER.peer_id)
    assert info.peer_id == SERVER.peer_id


async def test_requests_over_the_per_peer_rate_get_busy_and_the_stream_stays_open(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork) -> None:
    rate = PeerRate(2, max_peers=8)
    net.serve(SERVER.peer_id, wni.PROTOCOL_ID, functools.partial(
        serve_node_info, identity=SERVER, current_info=lambda: info_of(SERVER), rate=rate))
    client = NodeInfoClient(net.opener("client"), call_timeout_s=CALL_S)
    for _ in range(2):  # the burst
        await client.fetch(SERVER.peer_id)
    with pytest.raises(PeerBusy) as err:
        await client.fetch(SERVER.peer_id)
    assert err.value.peer_id == SERVER.peer_id
    assert "at most 2 node-info requests per second per peer" in err.value.message
    other = NodeInfoClient(net.opener("other"), call_timeout_s=CALL_S)
    await other.fetch(SERVER.peer_id)  # per peer: someone else is answered
    await trio.sleep(0.5)
    info, _ = await client.fetch(SERVER.peer_id)  # refilled, on the same stream
    assert info.peer_id == SERVER.peer_id
    assert len([o for o in net.opened if o[0] == "client"]) == 1
    assert rate.refused == 1


async def test_a_busy_node_info_answer_is_no_failure_for_membership(
        autojump_clock: trio.abc.Clock, net: MemoryNetwork) -> None:
    rate = PeerRate(1, max_peers=8)
    net.serve(SERVER.peer_id, wni.PROTOCOL_ID, functools.partial(
        serve_node_info, identity=SERVER, current_info=lambda: info_of(SERVER), rate=rate))
    cfg = NodeConfig()
    registry = PeerRegistry("client", stale_after_s=1e9, max_peers=8)
    registry.saw(SERVER.peer_id, Source.BOOTSTRAP, now=time.time())
    membership = Membership(
        local=cast(Any, SimpleNamespace(name="client")), host=cast(Any, None), dht=None,
        registry=registry, info_client=NodeInfoClient(net.opener("client"),
                                                      call_timeout_s=CALL_S),
        known_peers=KnownPeers(Path("/nonexistent/known_peers.json"), limit=8),
        p2p=cfg.p2p, discovery=cfg.discovery, on_peer_down=lambda peer: None,
        identifier=Identifier(net.opener("client"), timeout_s=CALL_S))
    await membership.refresh_peer(SERVER.peer_id)
    first = registry.get(SERVER.peer_id)
    assert first is not None and first.state is PeerState.HEALTHY and first.info is not None
    await membership.refresh_peer(SERVER.peer_id)  # over the rate: answered BUSY
    assert rate.refused == 1
    entry = registry.get(SERVER.peer_id)
    assert entry is not None and entry.state is PeerState.HEALTHY
    assert entry.consecutive_failures == 0 and entry.info == first.info  # kept as it was
