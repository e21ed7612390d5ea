"""Model digests reach the mesh: a peer's node-info shows them once the background task
has hashed the file, the DHT finds the holder by digest, and a hot swap is announced."""

from __future__ import annotations

import hashlib
from pathlib import Path

import peerllm
from peerllm.inference.specs import ModelSpec
from peerllm.testing import FakeBackend, write_fake_gguf
from tests.helpers import FAKE_MODEL, MakeConfig, wait_for_value, with_fake_model


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
            peerllm.open_node(make_config("b", bootstrap=[a.addrs()[0]])) as b:
        digest = sha256_of(file_a)

        async def b_sees(expected: str) -> str | None:
            return digest_seen(b, a.peer_id) if digest_seen(b, a.peer_id) == expected else None

        assert await wait_for_value(lambda: b_sees(digest), what="a's digest at b",
                                    timeout_s=30) == digest
        assert a.digests.path(digest) == file_a
        assert [m.digest for m in a.node_info().models] == [digest]

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
