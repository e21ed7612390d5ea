"""``peerllm pull`` and ``peerllm models`` as a user runs them: CLI processes against a
``peerllm node`` daemon that gets the model from another daemon."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable

import httpx

from peerllm.testing import write_fake_gguf
from peerllm.wire import blob as wb
from tests.helpers import Daemon, clean_env, peerllm_cmd, poll_until


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(peerllm_cmd(*args), capture_output=True, text=True,
                          env=clean_env(), timeout=60)


def test_peerllm_pull_by_id_into_a_daemon_from_another(daemon: Callable[[str], Daemon]
                                                       ) -> None:
    holder, puller = daemon("holder"), daemon("puller")
    holder.data_dir.mkdir(parents=True)
    model = write_fake_gguf(holder.data_dir / "tiny.gguf", 5 * 1024 * 1024 + 3)
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    holder.start("--no-mdns", "--model", str(model))
    puller.start("--no-mdns", "--bootstrap", holder.addr)
    poll_until(lambda: httpx.get(f"{puller.api}/api/tags", trust_env=False).json(),
               lambda doc: [t["digest"] for t in doc["models"]] == [digest[7:]],
               what="the puller to see the holder's tiny with its digest")
    pulled = cli("pull", "tiny", "--api", puller.api)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert f"tiny is ready ({digest})" in pulled.stdout
    listed = cli("models", "--api", puller.api)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines()
               if line.strip("│┃ ").startswith("tiny"))
    assert wb.short_digest(digest) in row and "5.0 MiB" in row
    assert "puller (local)" in row and "holder" in row
    again = cli("pull", "tiny", "--json", "--api", puller.api)
    assert again.returncode == 0 and '"success"' in again.stdout.splitlines()[-1]
