"""Model digests reach the mesh: a peer's node-info shows them once the background task
has hashed the file, the DHT finds the holder by digest, and a hot swap is announced."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

import peerllm
from peerllm.api import open_api
from peerllm.inference.specs import ModelSpec
from peerllm.testing import FakeBackend, write_fake_gguf
from tests.helpers import FAKE_MODEL, MakeConfig, api_url, wait_for_value, with_fake_model


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def digest_seen(b: peerllm.Node, peer_id: str) -> str | None:
    entry = b.registry.get(peer_id)
    if entry is None or entry.info is None:
        return None
    return next((m.digest for m in entry.info.models if m.id == FAKE_MODEL), None)


async def test_a_peer_sees_the_digest_and_finds_the_holder_by_it(
        make_config: MakeConfig) -> None:
    cfg_a = with_fake_model(make_config("a"))
    assert cfg_a.data_dir is not None
    file_a = cfg_a.data_dir / f"{FAKE_MODEL}.gguf"
    async with peerllm.open_node(cfg_a, backend=FakeBackend()) as a, \
            peerllm.open_node(make_config("b", bootstrap=[a.addrs()[0]])) as b, \
            open_api(a), open_api(b), \
            httpx.AsyncClient(base_url=api_url(a), trust_env=False) as http_a, \
            httpx.AsyncClient(base_url=api_url(b), trust_env=False) as http_b:
        digest = sha256_of(file_a)

        async def b_sees(expected: str) -> str | None:
            return digest_seen(b, a.peer_id) if digest_seen(b, a.peer_id) == expected else None

        assert await wait_for_value(lambda: b_sees(digest), what="a's digest at b",
                                    timeout_s=30) == digest
        assert a.digests.path(digest) == file_a
        assert [m.digest for m in a.node_info().models] == [digest]
        # The HTTP model lists, on the holder and on the peer: Ollama's bare hex, ours
        # in full.
        for http in (http_a, http_b):
            tags = (await http.get("/api/tags")).json()["models"]
            assert [(t["name"], t["digest"]) for t in tags] == [(FAKE_MODEL, digest[7:])]
            listed = (await http.get("/v1/models")).json()["data"]
            assert [(p["digest"], p["file_bytes"]) for p in listed[0]["peerllm"]["providers"]
                    ] == [(digest, file_a.stat().st_size)]
        status = (await http_a.get(f"/v1/models/{FAKE_MODEL}")).json()
        assert (status["digest"], status["replicas"]) == (digest, 0)
        # A pinned id runs where that version is served, here and through the peer.
        for http in (http_a, http_b):
            for pin, code in ((digest[7:15], 200), (digest[7:].upper(), 200),
                              ("00000000", 404), ("1234", 404)):
                r = await http.post("/v1/chat/completions", json={
                    "model": f"{FAKE_MODEL}@{pin}", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == code, (pin, r.text)

        async def holders(key: str) -> list[str] | None:
            return [p for p, _ in await b.find_providers(key)] or None

        assert await wait_for_value(lambda: holders(digest), what="provider by digest",
                                    timeout_s=30) == [a.peer_id]
        # A hot swap on a: b learns the new digest (node-info) and the DHT finds a by it.
        new_file = write_fake_gguf(cfg_a.data_dir / "new.gguf", 300_000)
        new_digest = sha256_of(new_file)
        assert a.engine is not None
        a.engine.registry.replace(ModelSpec(id=FAKE_MODEL, path=new_file, replicas=2))
        assert await wait_for_value(lambda: b_sees(new_digest), what="the new digest at b",
                                    timeout_s=30) == new_digest
        entry = b.registry.get(a.peer_id)
        assert entry is not None and entry.info is not None
        assert entry.info.models[0].replicas == 2
        assert await wait_for_value(lambda: holders(new_digest), what="new provider",
                                    timeout_s=30) == [a.peer_id]
