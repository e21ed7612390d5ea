"""Hot swap and delete at node level, under a running stream (real nodes, FakeBackend
held on its gate): a pull of a new version of a served id lets the running stream
finish on the old file while new requests run on the new one; DELETE waits for or
cancels a generating model as the caller asks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from peerllm.client import NodeClient
from peerllm.testing import FakeBackend, write_fake_gguf
from peerllm.transfer.digests import DigestCache
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model

TOKENS = [f"w{i} " for i in range(12)]
HANG_GUARD_S = 30  # a broken stream fails the test instead of hanging it


def fake_file(cfg: peerllm.NodeConfig, size: int) -> tuple[Path, str]:
    """Rewrite the config's fake model as a ``size``-byte file (manifest cached, as the
    digest task leaves it); returns (path, its sha256 digest)."""
    path = Path(cfg.models.paths[0])
    write_fake_gguf(path, size)
    DigestCache().manifest(path)
    return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def chat(model: str, *, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "max_tokens": 64,
            "messages": [{"role": "user", "content": "tell me"}]}


async def stream_chat(http: httpx.AsyncClient, model: str, out: dict[str, Any]) -> None:
    """POST a streaming chat; ``out`` gets the served-by header, the text, the finish
    reasons and any error event."""
    out.update(text="", finish=[], errors=[])
    async with http.stream("POST", "/v1/chat/completions", json=chat(model, stream=True)) \
            as resp:
        out["status"] = resp.status_code
        out["served_by"] = resp.headers.get("x-peerllm-served-by")
        if resp.status_code != 200:
            out["errors"].append(json.loads(await resp.aread())["error"])
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                out["errors"].append(event["error"])
                continue
            for choice in event["choices"]:
                out["text"] += choice["delta"].get("content") or ""
                if choice.get("finish_reason"):
                    out["finish"].append(choice["finish_reason"])
    out["ended"] = True


def digest_seen(node: peerllm.Node, peer_id: str, digest: str) -> bool:
    entry = node.registry.get(peer_id)
    return entry is not None and entry.info is not None \
        and any(m.digest == digest for m in entry.info.models)


@pytest.mark.parametrize("by", ["digest", "model id"])
async def test_a_pulled_new_version_swaps_in_while_a_stream_finishes_on_the_old(
        make_config: MakeConfig, by: str) -> None:
    cfg_a = with_fake_model(make_config("a"))
    v1_path, v1 = fake_file(cfg_a, 2 * 1024 * 1024)
    backend = FakeBackend(tokens=TOKENS)
    async with peerllm.open_node(cfg_a, backend=backend) as a, open_api(a) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=HANG_GUARD_S) as http, \
            trio.open_nursery() as nursery:
        assert a.engine is not None
        await wait_until(lambda: a.engine is not None
                         and a.engine.registry.status(FAKE_MODEL).digest == v1,
                         what="a's digest of v1")
        backend.gate.clear()  # every generation holds before its first token
        old: dict[str, Any] = {}
        nursery.start_soon(stream_chat, http, FAKE_MODEL, old)
        await wait_until(lambda: len(backend.prompts) == 1, what="the stream to start on v1")
        assert [i.path for i in backend.opened] == [v1_path]

        cfg_b = with_fake_model(make_config("b", bootstrap=[a.addrs()[0]]))
        _, v2 = fake_file(cfg_b, 3 * 1024 * 1024 + 7)
        assert v2 != v1
        async with peerllm.open_node(cfg_b, backend=FakeBackend()) as b:
            await wait_until(lambda: digest_seen(a, b.peer_id, v2),
                             what="b's node-info at a to carry v2")
            async with NodeClient(url) as client:
                # By id: the version the peers serve, which is not ours.
                events = [e async for e in client.pull(v2 if by == "digest" else FAKE_MODEL)]
            assert events[-1]["status"] == "success" and events[-1]["digest"] == v2
        # b is gone: whatever runs "fake" from now on runs on a.
        await wait_until(lambda: all(c.local for c in a.router.candidates(FAKE_MODEL)[0]),
                         what="a to stop offering b")
        status = (await http.get(f"/v1/models/{FAKE_MODEL}")).json()
        assert status["digest"] == v2
        assert "ended" not in old, "the stream on v1 must still be running"
        # A new request, pinned to v2, runs on the new file next to the old stream.
        new: dict[str, Any] = {}
        nursery.start_soon(stream_chat, http, f"{FAKE_MODEL}@{v2[7:19]}", new)
        await wait_until(lambda: len(backend.prompts) == 2, what="the v2 request to start")
        assert [i.path for i in backend.opened][-1] != v1_path
        assert a.store is not None and backend.opened[-1].path == a.store.blob_path(v2)
        # The old version is refused by pin, naming the version that is served.
        refused = await http.post("/v1/chat/completions",
                                  json=chat(f"{FAKE_MODEL}@{v1[7:19]}", stream=False))
        assert refused.status_code == 404, refused.text
        assert v2[7:15] in refused.json()["error"]["message"]
        backend.gate.set()
        with trio.fail_after(HANG_GUARD_S):
            await wait_until(lambda: "ended" in old and "ended" in new,
                             what="both streams to end", timeout_s=HANG_GUARD_S)
        for done in (old, new):
            assert done["status"] == 200 and done["served_by"] == a.peer_id
            assert done["text"] == "".join(TOKENS) and done["finish"] == ["stop"]
            assert done["errors"] == []
        assert backend.opened[0].closed, "the old version is freed once drained"


@pytest.mark.parametrize("cancel", [False, True])
async def test_delete_of_a_generating_model_waits_for_or_cancels_its_stream(
        make_config: MakeConfig, cancel: bool) -> None:
    cfg = with_fake_model(make_config("deleter"))
    backend = FakeBackend(tokens=TOKENS)
    async with peerllm.open_node(cfg, backend=backend) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=HANG_GUARD_S) as http, \
            trio.open_nursery() as nursery:
        backend.gate.clear()
        running: dict[str, Any] = {}
        nursery.start_soon(stream_chat, http, FAKE_MODEL, running)
        await wait_until(lambda: len(backend.prompts) == 1, what="the stream to start")
        deleted: dict[str, Any] = {}

        async def delete() -> None:
            resp = await http.request("DELETE", "/api/delete",
                                      json={"model": FAKE_MODEL, "cancel": cancel})
            deleted.update(code=resp.status_code, body=resp.json())

        nursery.start_soon(delete)
        await wait_until(lambda: FAKE_MODEL not in node.model_ids(),
                         what="the model to stop being served")
        with trio.fail_after(HANG_GUARD_S):
            if cancel:  # the gate stays shut: only the cancel can end the stream
                await wait_until(lambda: "ended" in running and bool(deleted),
                                 what="the cancelled stream and the delete to end",
                                 timeout_s=HANG_GUARD_S)
            else:
                assert not deleted, "delete must wait for the running stream"
                backend.gate.set()
                await wait_until(lambda: bool(deleted), what="the delete to end",
                                 timeout_s=HANG_GUARD_S)
        assert deleted["code"] == 200 and deleted["body"]["status"] == "success"
        if cancel:  # cancelled before its first token: the answer is the error itself
            assert running["status"] == 503 and running["text"] == ""
            assert running["errors"] and "deleted" in running["errors"][0]["message"]
        else:
            assert running["status"] == 200
            assert running["text"] == "".join(TOKENS) and running["finish"] == ["stop"]
            assert running["errors"] == []
