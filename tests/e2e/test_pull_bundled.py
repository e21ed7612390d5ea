"""Issue 13's headline: a node without the model pulls the bundled GGUF from a peer over
the blob protocol (side channel), by model id, and then serves it itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import trio

import peerllm
from peerllm.api import open_api
from peerllm.client import NodeClient
from peerllm.inference.catalog import assemble_bundled
from tests.helpers import MODEL, node_config, wait_until


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return "sha256:" + h.hexdigest()


def blob_size(node: peerllm.Node, digest: str) -> int:
    assert node.store is not None
    return node.store.blob_path(digest).stat().st_size


async def test_a_node_without_the_model_pulls_it_from_a_peer_and_serves_it(
        tmp_path: Path) -> None:
    expected = await trio.to_thread.run_sync(sha256_file, assemble_bundled())
    # b first, so a (the holder) can leave once b has the file: then only b can answer.
    b_cfg = node_config(tmp_path, "b", dht=False, serve_default=False)
    async with peerllm.open_node(b_cfg) as b, open_api(b) as url, \
            NodeClient(url) as client, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=120) as http:
        a_cfg = node_config(tmp_path, "a", dht=False, serve_default=True,
                            bootstrap=[b.addrs()[0]])
        async with peerllm.open_node(a_cfg) as a:
            await wait_until(lambda: [m.digest for m in a.model_statuses()] == [expected],
                             timeout_s=60, what="a's digest of the bundled file")
            await wait_until(lambda: MODEL in b.mesh_models(), timeout_s=30,
                             what="b to see a's model")
            assert b.model_ids() == []
            events = [e async for e in client.pull(MODEL)]
            assert events[-1]["status"] == "success", events[-1]
            assert (events[-1]["model"], events[-1]["digest"]) == (MODEL, expected)
            rows = await client.transfers()
            assert [s["label"] for s in rows[0]["sources"]] == [a.peer_id]
            assert a.blob_server is not None
            sent = a.blob_server.statistics()
            assert sent["bytes_sent"] == blob_size(b, expected) and sent["side_channel"] >= 1
        assert b.model_ids() == [MODEL]
        assert b.store is not None
        blob = b.store.blob_path(expected)
        assert await trio.to_thread.run_sync(sha256_file, blob) == expected
        assert b.engine is not None
        assert b.engine.registry.status(MODEL).digest == expected
        tags = (await http.get("/api/tags")).json()["models"]
        assert [(t["name"], t["digest"]) for t in tags] == [(MODEL, expected[7:])]
        resp = await http.post("/v1/chat/completions", json={
            "model": MODEL, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]})
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-peerllm-served-by"] == b.peer_id
        assert resp.json()["choices"][0]["message"]["content"].strip()
