"""Hostile bytes on the p2p port and bad frames on node-info leave the node up and serving."""

from __future__ import annotations

import os
import struct

import trio

import peerllm
from peerllm.errors import PeerConnectionLost
from peerllm.p2p.transport import MULTISTREAM_HEADER, OLD_PRELUDE_MAGIC
from peerllm.wire.framing import encode_frame
from peerllm.wire.nodeinfo import PROTOCOL_ID
from tests.helpers import MakeConfig, healthy_names, wait_until


def tcp_port(addr: str) -> int:
    parts = addr.split("/")
    return int(parts[parts.index("tcp") + 1])


async def test_garbage_on_the_p2p_port(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("victim")) as victim:
        port = tcp_port(victim.addrs()[0])
        payloads = [os.urandom(4096), b"\x00" * 100, b"GET / HTTP/1.1\r\n\r\n",
                    MULTISTREAM_HEADER + os.urandom(2048),  # passes the first-bytes check
                    OLD_PRELUDE_MAGIC + bytes(33),  # a PeerLLM from before #11
                    b"/multistream/1.0.0\n"]
        for data in payloads:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await stream.send_all(data)
                # Read until the victim hangs up, for at most 5 s: whether it hangs up on
                # each payload is not the point; that it is still up and healthy after all
                # of them is, and that is checked below by waiting for it.
                with trio.move_on_after(5):
                    while await stream.receive_some(65536):
                        pass
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()
        # A connection that says nothing at all is dropped by the upgrade's timeout.
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):
            while await silent.receive_some(65536):
                pass
        await silent.aclose()
        async with peerllm.open_node(make_config("friend", bootstrap=[victim.addrs()[0]])) as f:
            await wait_until(lambda: "victim" in healthy_names(f.peers()), what="victim healthy")


async def test_bad_frames_on_node_info(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("target")) as target, \
            peerllm.open_node(make_config("attacker", bootstrap=[target.addrs()[0]])) as attacker:
        await wait_until(lambda: "target" in healthy_names(attacker.peers()), what="connect")
        bad_frames = [
            struct.pack(">I", 2**31) + b"x",                   # oversized length prefix
            struct.pack(">I", 0),                               # empty frame
            struct.pack(">I", 3) + b"\xc1\xc1\xc1",             # invalid msgpack
            encode_frame({"t": "info_req", "v": 99, "id": 1}),  # unsupported version
            encode_frame({"t": "nope", "v": 1}),                # unknown type
            encode_frame({"t": "info_req", "v": 1, "id": True}),  # bool is not an int
            os.urandom(512),
        ]
        for frame in bad_frames:
            stream = await attacker.host.open_stream(target.peer_id, PROTOCOL_ID)
            await stream.send_all(frame)
            with trio.move_on_after(5):  # as above: the answer below is what is checked
                try:
                    while await stream.receive_some():
                        pass
                except PeerConnectionLost:  # reset by the target: exactly what we expect
                    pass
        # The target is still up, and still answers this very peer correctly.
        await attacker.membership.info_client.drop(target.peer_id)
        info, _ = await attacker.membership.info_client.fetch(target.peer_id)
        assert info.name == "target"
        assert info.peer_id == target.peer_id
