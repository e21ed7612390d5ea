"""A pull survives its daemon being killed (SIGKILL): the verified chunks stay on disk,
and the same pull after a restart resumes from them (two `peerllm node` processes)."""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from peerllm.testing import write_fake_gguf
from peerllm.transfer.digests import DigestCache
from peerllm.wire import blob as wb
from tests.helpers import Daemon, poll_until

FILE_BYTES = 3 * wb.DEFAULT_CHUNK_BYTES + 777
UPLOAD_MB_S = "1"  # the holder's upload cap: the pull takes seconds, time to kill it


def events(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in resp.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: "):])


def serves(api: str, model: str) -> Callable[[], bool]:
    def check() -> bool:
        doc = httpx.get(f"{api}/v1/models", timeout=10).json()
        return any(m["id"] == model for m in doc["data"])

    return check


def test_a_killed_pull_resumes_after_a_restart(daemon: Callable[[str], Daemon],
                                               tmp_path: Path) -> None:
    model = tmp_path / "slow.gguf"
    write_fake_gguf(model, FILE_BYTES)
    digest = DigestCache().manifest(model).digest
    holder, puller = daemon("holder"), daemon("puller")
    holder.start("--no-mdns", "--model", str(model), env={"PEERLLM_UPLOAD_LIMIT": UPLOAD_MB_S})
    puller.start("--no-mdns", "--bootstrap", holder.addr)
    poll_until(serves(puller.api, "slow"), lambda ok: ok, what="the puller to see the model")
    with httpx.Client(base_url=puller.api, timeout=60) as http, \
            http.stream("POST", "/v1/models/pull", json={"model": "slow"}) as resp:
        assert resp.status_code == 200
        for event in events(resp):
            if event["completed"] >= wb.DEFAULT_CHUNK_BYTES:
                break  # a chunk is verified on disk
    puller.stop(signal.SIGKILL)
    partials = list((puller.data_dir / "models" / "blobs").glob("*.partial"))
    assert [p.name for p in partials] == [f"sha256-{wb.digest_hex(digest)}.gguf.partial"]
    puller.start("--no-mdns", "--bootstrap", holder.addr)
    poll_until(serves(puller.api, "slow"), lambda ok: ok, what="the puller to see it again")
    with httpx.Client(base_url=puller.api, timeout=60) as http, \
            http.stream("POST", "/v1/models/pull", json={"model": "slow"}) as resp:
        assert resp.status_code == 200
        seen = list(events(resp))
    assert seen[-1]["status"] == "success" and seen[-1]["digest"] == digest
    assert max(e["resumed"] for e in seen) >= wb.DEFAULT_CHUNK_BYTES
    blob = puller.data_dir / "models" / "blobs" / f"sha256-{wb.digest_hex(digest)}.gguf"
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == wb.digest_hex(digest)
