"""The owner of a node is never starved: by a peer flooding it with requests, or by a
local HTTP client that stops reading its stream. Real hosts and a real HTTP API; the
models run on FakeBackend (slow enough to queue behind)."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from peerllm.node import Node
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, api_url, wait_until, with_fake_model

FLOOD = 8
FLOOD_TOKENS = 400


def status(node: Node) -> tuple[int, int]:
    st = next(m for m in node.model_statuses() if m.id == FAKE_MODEL)
    return st.active, st.queued


async def drain(node: Node, prompt: str, max_tokens: int) -> str:
    return "".join([t async for t in node.generate(FAKE_MODEL, prompt, max_tokens=max_tokens)])


async def test_a_peer_flooding_us_does_not_starve_our_own_request(
        make_config: MakeConfig) -> None:
    # ~2 s per flood request: queued behind all eight, ours would wait ~16 s.
    backend = FakeBackend(token_s=0.005)
    cfg_a = with_fake_model(make_config("owner"), max_concurrent=1, max_queue=FLOOD)
    async with peerllm.open_node(cfg_a, backend=backend) as a, \
            peerllm.open_node(make_config("flooder", bootstrap=[a.addrs()[0]])) as b:
        await wait_until(lambda: FAKE_MODEL in b.mesh_models(), what="b to see a's model")
        async with trio.open_nursery() as flood:
            for i in range(FLOOD):
                flood.start_soon(drain, b, f"peer{i}", FLOOD_TOKENS)
            await wait_until(lambda: status(a) == (1, FLOOD - 1),
                             what="all eight peer requests admitted on a (1 running)")
            with trio.fail_after(60):  # a bound for a hang, not a timing assertion
                text = await drain(a, "owner", 2)
            assert text  # our request was answered...
            # ...right after the peer generation that was running when it came, ahead
            # of the seven peer requests queued before it.
            first, ours, *later = backend.prompts
            assert first.startswith("peer") and ours == "owner"
            assert all(p.startswith("peer") for p in later)
            flood.cancel_scope.cancel()
        # The flood's refusals and limits are visible; none of it was a failure of a.
        info = a.info_document()["limits"]
        assert info["max_streams_per_peer"] == 8 and info["peer_share"] == 1.0
        assert b.router.breakers.describe(a.peer_id).startswith("closed")


async def test_a_client_that_stops_reading_is_dropped_and_frees_the_model(
        make_config: MakeConfig, caplog: pytest.LogCaptureFixture) -> None:
    # Big tokens fill the socket buffers quickly; the stream would go on for ~130 MB.
    backend = FakeBackend(tokens=["x" * 4000] * 40_000)
    cfg = with_fake_model(make_config("owner"), max_concurrent=1,
                          api={"stall_timeout_s": 1.0})
    caplog.set_level(logging.WARNING, logger="peerllm.api")
    async with peerllm.open_node(cfg, backend=backend) as node, open_api(node), \
            httpx.AsyncClient(base_url=api_url(node), trust_env=False, timeout=60) as http:
        host, port = api_url(node).removeprefix("http://").split(":")
        body = json.dumps({"model": FAKE_MODEL, "prompt": "never read", "max_tokens": 32768,
                           "stream": True}).encode()
        stalled = trio.socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window
        with stalled:
            await stalled.connect((host, int(port)))
            await stalled.send(b"POST /v1/completions HTTP/1.1\r\nHost: " + host.encode()
                               + b"\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)
            await wait_until(lambda: status(node)[0] == 1, what="the stalled generation")
            with trio.fail_after(60):  # a bound for a hang, not a timing assertion
                second = await http.post("/v1/completions", json={
                    "model": FAKE_MODEL, "prompt": "me too", "max_tokens": 2})
            assert second.status_code == 200
            assert second.json()["usage"]["completion_tokens"] == 2
            assert backend.prompts == ["never read", "me too"]
            assert status(node) == (0, 0)
            assert backend.opened[0].generated < 40_000  # the first one was stopped
            # The stalled client reads at last: what was buffered, then the connection
            # closes without the end of the stream.
            received = bytearray()
            with trio.fail_after(60):
                while part := await stalled.recv(65536):
                    received += part
        assert received.startswith(b"HTTP/1.1 200")
        assert b"data: [DONE]" not in received and not received.endswith(b"\r\n0\r\n\r\n")
    dropped = [r for r in caplog.records if "has not read the response" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].exc_info is None
