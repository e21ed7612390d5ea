"""A pull from three holders, one of which serves corrupted bytes under the right
manifest: the swarm drops it (bad chunk) and the file arrives whole from the others."""

from __future__ import annotations

import hashlib
import os
from contextlib import AsyncExitStack
from pathlib import Path

import peerllm
from peerllm.api import open_api
from peerllm.client import NodeClient
from peerllm.testing import FakeBackend, write_fake_gguf
from peerllm.transfer.digests import DigestCache
from peerllm.wire import blob as wb
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model

CHUNKS = 8
FILE_BYTES = CHUNKS * wb.DEFAULT_CHUNK_BYTES - 999


def corrupt_keeping_the_manifest(path: Path) -> None:
    """Flip a byte in every chunk, keeping size and mtime (the cached manifest stays
    "valid"): a holder that lies about its bytes."""
    st = path.stat()
    with path.open("r+b") as f:
        for i in range(CHUNKS):
            f.seek(i * wb.DEFAULT_CHUNK_BYTES + 4096)
            f.write(b"\xff")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


async def test_a_corrupting_holder_is_dropped_and_the_others_finish(
        make_config: MakeConfig) -> None:
    async with AsyncExitStack() as stack:
        holders: list[peerllm.Node] = []
        digest = ""
        for name in ("h1", "h2", "liar"):
            boot = [holders[0].addrs()[0]] if holders else []
            cfg = with_fake_model(make_config(name, bootstrap=boot))
            path = Path(cfg.models.paths[0])
            write_fake_gguf(path, FILE_BYTES)
            digest = DigestCache().manifest(path).digest  # the honest file's
            if name == "liar":
                corrupt_keeping_the_manifest(path)
            holders.append(await stack.enter_async_context(
                peerllm.open_node(cfg, backend=FakeBackend())))
        puller = await stack.enter_async_context(peerllm.open_node(
            make_config("puller", bootstrap=[holders[0].addrs()[0]]), backend=FakeBackend()))
        url = await stack.enter_async_context(open_api(puller))
        await wait_until(lambda: len([c for c in puller.mesh_models().get(FAKE_MODEL, [])
                                      if not c.local]) == 3,
                         what="the puller to see the three holders")
        client = await stack.enter_async_context(NodeClient(url))
        events = [e async for e in client.pull(FAKE_MODEL)]
        assert events[-1]["status"] == "success" and events[-1]["digest"] == digest
        sources = {s["label"]: s for s in events[-1]["sources"]}
        liar = holders[2].peer_id
        assert set(sources) == {h.peer_id for h in holders}
        assert sources[liar]["state"] == "dropped" and "chunk" in sources[liar]["reason"]
        assert sources[liar]["bytes"] == 0
        assert puller.store is not None
        blob = puller.store.blob_path(digest)
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == wb.digest_hex(digest)
