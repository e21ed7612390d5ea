"""Replication with real `peerllm node` processes: a target of 2 set with `peerllm
replicate` converges to exactly two holders; when the spare that made the copy is stopped
(SIGTERM), another spare pulls after the grace and the mesh is back at exactly two live
holders; the spare the rule does not choose never pulls (no over-replication)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from peerllm.testing import write_fake_gguf
from peerllm.transfer.digests import DigestCache
from peerllm.wire import blob as wb
from tests.helpers import Daemon, clean_env, peer_of, peerllm_cmd, poll_until

MODEL = "tiny"
FILE_BYTES = 2 * wb.DEFAULT_CHUNK_BYTES + 321  # a few MiB: three chunks
# Short intervals keep the test near 25 s: node-info every 0.5 s, a holder silent for 5 s
# no longer counts. The grace outlasts many heartbeats (a live holder that a busy machine
# answers late must not drop out of some node's view: that node would pull an extra copy),
# and it is also the patience before a second candidate joins a slow first one.
CONFIG = """\
p2p:
  heartbeat_interval_s: 0.5
  call_timeout_s: 2.0
  dial_timeout_s: 2.0
models:
  replication_interval_s: 0.3
  replication_grace_s: 5.0
"""
WAIT_S = 30.0  # each convergence takes about a grace; this bounds a stuck one


def get(api: str, path: str) -> Any:
    return httpx.get(f"{api}{path}", timeout=10).json()


def holds(api: str, digest: str) -> bool:
    """Whether the node at ``api`` serves the file ``digest`` itself."""
    return any(p["local"] and p["digest"] == digest
               for m in get(api, "/v1/models")["data"] for p in m["peerllm"]["providers"])


def holders(spares: list[Daemon], digest: str) -> set[str]:
    return {d.name for d in spares if holds(d.api, digest)}


def replication_pulls(d: Daemon) -> list[dict[str, Any]]:
    """The pulls replication started on ``d`` (running and recently finished)."""
    return [t for t in get(d.api, "/v1/transfers")["transfers"]
            if t["origin"] == "replication"]


def address(d: Daemon) -> str:
    """``d``'s multiaddr before it runs (its key is made now): spares dial each other."""
    return f"/ip4/127.0.0.1/tcp/{d.p2p_port}/p2p/{peer_of(d.data_dir)}"


def bootstrap(d: Daemon, everyone: list[Daemon]) -> list[str]:
    return [arg for other in everyone if other is not d
            for arg in ("--bootstrap", address(other))]


def sees_everyone(everyone: list[Daemon]) -> Callable[[], dict[str, set[str]]]:
    def fetch() -> dict[str, set[str]]:
        return {d.name: {p["name"] for p in get(d.api, "/v1/peers")["peers"]
                         if p["state"] == "healthy"} for d in everyone}

    return fetch


def test_two_replicas_converge_and_recover_after_a_holder_stops(
        daemon: Callable[[str], Daemon], tmp_path: Path) -> None:
    model = tmp_path / f"{MODEL}.gguf"
    write_fake_gguf(model, FILE_BYTES)
    digest = DigestCache().manifest(model).digest
    config = tmp_path / "node.yaml"
    config.write_text(CONFIG)
    common = ("--config", str(config), "--no-mdns")

    a, *spares = everyone = [daemon(name) for name in ("a", "b", "c", "d")]
    with ThreadPoolExecutor(len(everyone)) as pool:  # started together: each dials them all
        for started in [pool.submit(d.start, *common, *bootstrap(d, everyone),
                                    *(("--model", str(model)) if d is a else ()))
                        for d in everyone]:
            started.result()
    names = {d.name for d in everyone}
    # the rule agrees across nodes only when they see the same mesh: wait for it
    poll_until(sees_everyone(everyone),
               lambda seen: all(seen[n] == names - {n} for n in names),
               what="every node to see every other one healthy")
    poll_until(lambda: holds(a.api, digest), bool, what="a to know its file's digest")

    out = subprocess.run(peerllm_cmd("replicate", MODEL, "--replicas", "2", "--json",
                                     "--api", a.api),
                         capture_output=True, text=True, env=clean_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["replicas"] == 2

    first = poll_until(lambda: holders(spares, digest), lambda h: len(h) == 1,
                       timeout_s=WAIT_S, what="one spare to pull the second copy")
    (copier,) = [d for d in spares if d.name in first]
    assert holds(a.api, digest)
    # the copy inherits the target, so it outlives the node that asked
    assert get(copier.api, f"/v1/models/{MODEL}")["replicas"] == 2

    copier.stop()  # SIGTERM
    assert copier.proc is not None and copier.proc.returncode == 0, "".join(copier.banner)
    rest = [d for d in spares if d is not copier]
    second = poll_until(lambda: holders(rest, digest), lambda h: len(h) >= 1,
                        timeout_s=WAIT_S, what="another spare to pull after the grace")
    assert len(second) == 1, f"both remaining spares pulled: {second}"
    (idle,) = [d for d in rest if d.name not in second]
    live = [a, *rest]
    assert {d.name for d in live if holds(d.api, digest)} == {"a", *second}
    # every node judged the mesh many times over while the target was met (and during
    # the grace): the spare the rule did not choose never started a pull
    assert replication_pulls(idle) == [], "a spare pulled although the target was met"
    (pulled,) = replication_pulls(next(d for d in rest if d.name in second))
    assert pulled["state"] == "done" and pulled["digest"] == digest, pulled
