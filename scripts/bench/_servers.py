"""Start the servers the concurrency and soak benchmarks load: peerllm nodes, llama_cpp.server
and llama.cpp's llama-server, each a child process with its own log, and wait until ready.

Every child gets the same OMP_WAIT_POLICY (``--omp-wait-policy``; by default none, as
`peerllm node` and llama-server run: libgomp's default was faster than PASSIVE on an idle
machine and even with it on a busy one, README), the same threads and context per
sequence, and no inherited PEERLLM_/MODEL_ settings.
A node's settings go in a YAML file (JSON is YAML) rather than flags, so the same
benchmark runs against a main that has no flag for them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Child, ProcessGroup, clean_env, wait_until
from _load import get_json
from overhead import LLAMA_SERVER_LAUNCHER, missing_server_extras

MODEL_ID = "gemma3-270m-q4_k_m"
START_TIMEOUT_S = 240.0  # imports + model load + warm-up with neighbours on 2 cores
MESH_TIMEOUT_S = 120.0
OMP_ENV: dict[str, str] = {}
"""Environment every child gets on top of the clean one: ``use_omp_wait_policy`` fills it."""
OMP_POLICIES = ("default", "PASSIVE", "ACTIVE")


def use_omp_wait_policy(policy: str) -> str:
    """Give every child this OMP_WAIT_POLICY ("default": libgomp's own, the variable unset).
    Returns the text the reports print."""
    OMP_ENV.clear()
    if policy != "default":
        OMP_ENV["OMP_WAIT_POLICY"] = policy
    return f"OMP_WAIT_POLICY={policy}" if policy != "default" else "OMP_WAIT_POLICY unset"

__all__ = ["MODEL_ID", "BenchError", "Server", "missing_server_extras", "start_llama_cpp_server",
           "start_llama_server", "start_node", "wait_sees_model"]


class BenchError(RuntimeError):
    """A server could not be set up or answered wrongly; the message says which and why."""


@dataclass
class Server:
    name: str
    url: str
    child: Child
    info: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.child.pid


def child_env(threads: int, ctx: int) -> dict[str, str]:
    env = {k: v for k, v in clean_env(**OMP_ENV).items()
           if not k.startswith(("MODEL_", "MODELS_"))}
    env.pop("MODEL", None)  # llama_cpp.server reads its settings from the environment too
    env.update(MODEL_THREADS=str(threads), MODEL_CONTEXT_SIZE=str(ctx),
               MODEL_USE_EXTRA_BUFTS="false", MODEL_GPU_LAYERS="0")
    return env


def _probe(child: Child, url: str, what: str) -> Any | None:
    if not child.alive():
        raise BenchError(f"{what} exited with code {child.proc.returncode}:\n{child.log_tail()}")
    return get_json(url)


def _wait(child: Child, url: str, what: str, timeout_s: float = START_TIMEOUT_S) -> Any:
    got = wait_until(lambda: _probe(child, url, what), timeout_s=timeout_s, interval_s=0.25)
    if got is None:
        raise BenchError(f"{what} did not answer {url} within {timeout_s:.0f} s:\n"
                         f"{child.log_tail()}")
    return got


def node_config(*, parallel: int | None, max_queue: int, streams_per_peer: int,
                serve_model: bool) -> dict[str, Any]:
    """The benchmark's node settings: room for every stream it sends (a refusal would be
    the benchmark's own limit, not the node's behaviour), and the batch slots if forced."""
    inference: dict[str, Any] = {"max_queue": max_queue}
    if parallel is not None:
        inference["parallel"] = parallel
    if serve_model:
        inference["preload"] = [MODEL_ID]
    return {"inference": inference,
            "p2p": {"max_streams_per_peer": streams_per_peer,
                    "peer_streams_per_s": float(max(20, 4 * streams_per_peer))}}


def start_node(group: ProcessGroup, work: Path, name: str, ports: tuple[int, int], *,
               env: Mapping[str, str], config: Mapping[str, Any],
               bootstrap: Sequence[str] = (), serve_model: bool = True) -> Server:
    """``peerllm node`` on 127.0.0.1; returns once its API answers (and its model loaded)."""
    p2p_port, api_port = ports
    cfg = work / f"{name}.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps(config, indent=2) + "\n")
    argv = [sys.executable, "-m", "peerllm", "node", "--config", str(cfg),
            "--data-dir", str(work / name), "--name", name,
            "--listen", f"/ip4/127.0.0.1/tcp/{p2p_port}", "--api", f"127.0.0.1:{api_port}",
            "--no-mdns", *(a for b in bootstrap for a in ("--bootstrap", b))]
    if not serve_model:
        argv.append("--no-default-model")
    child = group.spawn(name, argv, work / f"{name}.log", env=env)
    url = f"http://127.0.0.1:{api_port}"
    info = _wait(child, url + "/v1/node/info", name)
    server = Server(name=name, url=url, child=child, info=info)
    if serve_model:
        wait_loaded(server)
    server.info = get_json(url + "/v1/node/info") or info
    server.info["multiaddr"] = f"/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{info['node']['peer_id']}"
    return server


def wait_loaded(server: Server) -> dict[str, Any]:
    def loaded() -> Any | None:
        st = _probe(server.child, f"{server.url}/v1/models/{MODEL_ID}", server.name)
        if st and st.get("state") == "failed":
            raise BenchError(f"{server.name} failed to load {MODEL_ID}: {st.get('error')}")
        return st if st and st.get("state") == "loaded" else None

    st = wait_until(loaded, timeout_s=START_TIMEOUT_S, interval_s=0.25)
    if st is None:
        raise BenchError(f"{server.name} never loaded {MODEL_ID}:\n{server.child.log_tail()}")
    return dict(st)


def node_slots(server: Server) -> int | None:
    """The slots the node resolved for its models (node-info ``load.capacity``)."""
    info = get_json(server.url + "/v1/node/info") or {}
    cap = (info.get("load") or {}).get("capacity")
    return int(cap) if isinstance(cap, int) else None


def wait_sees_model(entry: Server, providers: Sequence[Server]) -> None:
    """Until ``entry`` lists every one of ``providers`` as a provider of the model."""
    want = {p.info["node"]["peer_id"] for p in providers}

    def sees() -> bool | None:
        data = _probe(entry.child, entry.url + "/v1/models", entry.name) or {}
        for m in data.get("data", []):
            if m.get("id") == MODEL_ID:
                got = {p.get("peer_id") for p in m.get("peerllm", {}).get("providers", [])}
                if want <= got:
                    return True
        return None

    if not wait_until(sees, timeout_s=MESH_TIMEOUT_S, interval_s=0.25):
        raise BenchError(f"{entry.name} never saw {MODEL_ID} on every provider:\n"
                         f"{entry.child.log_tail()}")


def start_llama_cpp_server(group: ProcessGroup, work: Path, port: int, model: Path, *,
                           env: Mapping[str, str], threads: int, ctx: int) -> Server:
    """llama-cpp-python's own server (one request at a time, the others wait), extra buffer
    types off."""
    child = group.spawn("llama-cpp-server", [
        sys.executable, "-c", LLAMA_SERVER_LAUNCHER, "--model", str(model),
        "--model_alias", MODEL_ID, "--n_ctx", str(ctx), "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--n_gpu_layers", "0", "--verbose", "False",
        # Its default lets a new request cut off the running one; queue them instead.
        "--interrupt_requests", "False",
        "--host", "127.0.0.1", "--port", str(port)], work / "llama-cpp-server.log", env=env)
    url = f"http://127.0.0.1:{port}"
    info = _wait(child, url + "/v1/models", "llama_cpp.server")
    line = wait_until(lambda: next((ln for ln in child.log_text().splitlines()
                                    if ln.startswith("overhead-bench:")), None), timeout_s=10)
    if line is None or "use_extra_bufts=False" not in line:
        raise BenchError(f"llama_cpp.server did not load with use_extra_bufts=False: {line}")
    return Server(name="llama-cpp-server", url=url, child=child,
                  info={"models": info, "load_line": line})


def start_llama_server(group: ProcessGroup, work: Path, port: int, model: Path, binary: Path,
                       *, env: Mapping[str, str], threads: int, ctx: int, parallel: int
                       ) -> Server:
    """llama.cpp's llama-server with ``parallel`` slots of ``ctx`` tokens each.

    Like our node: one KV stream per slot (--no-kv-unified), a full-size SWA cache when
    batched (our swa_full), no weight repacking (--no-repack, our use_extra_bufts=False).
    Its per-slot prompt cache stays on (its default; our node reuses prefixes too).
    """
    child = group.spawn("llama-server", [
        str(binary), "--model", str(model), "--alias", MODEL_ID, "--host", "127.0.0.1",
        "--port", str(port), "--threads", str(threads), "--threads-batch", str(threads),
        "--ctx-size", str(ctx * parallel), "--parallel", str(parallel), "--n-gpu-layers", "0",
        "--no-repack", "--no-kv-unified", *(["--swa-full"] if parallel > 1 else []),
        "--no-webui"], work / "llama-server.log", env=env)
    url = f"http://127.0.0.1:{port}"
    health = _wait(child, url + "/health", "llama-server")
    props = get_json(url + "/props") or {}
    return Server(name="llama-server", url=url, child=child,
                  info={"health": health, "total_slots": props.get("total_slots"),
                        "build_info": props.get("build_info")})
