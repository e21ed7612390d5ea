"""``parallel: auto`` (the default) on the real bundled model: a node started with no
inference settings serves several users at once, in one batch, and says so in node-info.

The backend is the real LlamaBackend, wrapped only to keep what it opened (the
BatchedLlamaInstance whose ``statistics()`` is the batching seam).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

import peerllm
from peerllm.api import open_api
from peerllm.config.inference import AUTO_PARALLEL
from peerllm.inference.batched_llama import BatchedLlamaInstance
from tests.e2e.recording import RecordingBackend
from tests.helpers import MODEL, node_config

USERS = 3


async def test_a_node_with_no_flags_batches_concurrent_users(tmp_path: Path) -> None:
    cfg = node_config(tmp_path, "auto", dht=False, serve_default=True)
    assert cfg.inference.parallel == "auto"
    backend = RecordingBackend()
    async with peerllm.open_node(cfg, backend=backend) as node, open_api(node) as url:
        assert node.engine is not None
        await node.engine.registry.load(MODEL)
        (instance,) = [i for i in backend.opened if isinstance(i, BatchedLlamaInstance)]
        assert instance.slots == AUTO_PARALLEL  # the bundled model's KV fits easily
        assert node.node_info().load.capacity == AUTO_PARALLEL
        before = instance.statistics()
        answers: list[str] = []

        async def user(i: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
                r = await http.post("/v1/chat/completions", json={
                    "model": MODEL, "max_tokens": 12, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Count to {i + 3}."}]})
                assert r.status_code == 200, r.text
                answers.append(r.json()["choices"][0]["message"]["content"])

        async with trio.open_nursery() as nursery:
            for i in range(USERS):
                nursery.start_soon(user, i)
        after = instance.statistics()
    assert len(answers) == USERS
    widths = {w: n - before.steps_by_width.get(w, 0) for w, n in after.steps_by_width.items()}
    # All three decoded in the same llama_decode calls, not one after another.
    assert any(n > 0 for w, n in widths.items() if w >= USERS), widths
