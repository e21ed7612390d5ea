"""Inference overhead: llama.cpp in-process vs llama-cpp-python's server vs our node vs the mesh.

One run, side by side, on the same GGUF file (the bundled gemma3-270m-q4_k_m), prompt,
greedy sampling (temperature 0, fixed seed, repeat_penalty 1), completion length,
n_threads and model params (n_ctx, use_extra_bufts=False) on every path:

  (a) llama-cpp-python in this process: Llama(...).create_completion(stream=True)
  (b) python -m llama_cpp.server (llama-cpp-python's own OpenAI server)
  (c) `peerllm node` serving the model itself
  (d) `peerllm node` B (--no-default-model) relaying to node A over libp2p

(b)-(d) are POST /v1/completions with stream=true, read as SSE with httpx from this process.
Every path is warmed up once, then the paths are interleaved run by run (a,b,c,d,a,b,...)
so machine noise hits them alike. Per sample it records TTFT (request sent -> first
non-empty text), tokens/s (completion tokens / (last text chunk - first text chunk)),
end-to-end tokens/s and total time, every chunk's arrival time, and per-thread CPU time,
run-queue wait and involuntary context switches of every process involved (from /proc),
to show where any overhead comes from. Medians, ratios to (a) and the targets are printed;
JSON with the raw samples goes to scripts/bench/results/overhead-<timestamp>.json.

    python scripts/bench/overhead.py --runs 5 --tokens 128

Path (b) needs llama-cpp-python's server extras (fastapi, uvicorn, sse-starlette,
starlette-context, pydantic-settings); without them (b) is skipped with a message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    Child,
    ProcessGroup,
    clean_env,
    fmt,
    free_ports,
    machine_info,
    managed_processes,
    median,
    now,
    percentile,
    rnd,
    table,
    timestamp_slug,
    wait_until,
    write_results,
)

MODEL_ID = "gemma3-270m-q4_k_m"
# A base model continuing a story under greedy decoding settles into a loop and does not
# emit end-of-text, so every path generates exactly --tokens tokens (checked per sample).
DEFAULT_PROMPT = ("Here is a long story about a dragon who lived in the mountains. "
                  "Once upon a time,")
ALL_PATHS = ("a", "b", "c", "d")
PATH_NAMES = {"a": "(a) llama-cpp-python in-process", "b": "(b) llama_cpp.server",
              "c": "(c) peerllm node, local", "d": "(d) peerllm node B -> A"}
SERVER_EXTRAS = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                 ("sse_starlette", "sse-starlette"), ("starlette_context", "starlette-context"),
                 ("pydantic_settings", "pydantic-settings"))
TPS_RATIO_TARGET = 0.97  # (c) and (d) tokens/s >= this x (a)
MESH_TTFT_TARGET_MS = 5.0  # median TTFT (d) - median TTFT (c)
NODE_MIN_AGE_S = 32.0  # node.py refreshes the DHT every second for a node's first 30 s
START_TIMEOUT_S = 180.0  # imports + model load on a busy 2-core machine
MESH_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0

# Runs llama_cpp.server with llama.cpp's "extra buffer types" (weight repacking) off, as
# our engine loads models (MODEL_USE_EXTRA_BUFTS defaults to off): the server has no flag
# for it. Llama.__init__ takes its model params from llama_model_default_params() at call
# time, so patching that function in this (server-only) process is enough; the line
# printed after the load lets the benchmark check the setting really applied.
LLAMA_SERVER_LAUNCHER = """\
import runpy, sys
import llama_cpp
import llama_cpp.llama_cpp as C
_defaults = C.llama_model_default_params
def _params():
    p = _defaults()
    p.use_extra_bufts = False
    return p
C.llama_model_default_params = _params
_init = llama_cpp.Llama.__init__
def _init_and_report(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    print(f"overhead-bench: use_extra_bufts={bool(self._model.params.use_extra_bufts)} "
          f"n_threads={self.n_threads} n_threads_batch={self.n_threads_batch} "
          f"n_ctx={self.n_ctx()} n_batch={self.n_batch}", file=sys.stderr, flush=True)
llama_cpp.Llama.__init__ = _init_and_report
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class BenchError(RuntimeError):
    """A path could not be set up or answered wrongly; the message says which and why."""


# --------------------------------------------------------------------------- /proc accounting


@dataclass(frozen=True)
class ThreadStat:
    comm: str
    run_ns: int  # time on a CPU (schedstat field 1)
    wait_ns: int  # time runnable but waiting for a CPU (schedstat field 2)
    nonvoluntary: int  # times the scheduler took the CPU away (preemptions)


def thread_stats(pid: int) -> dict[int, ThreadStat]:
    """Per-thread scheduler counters of ``pid`` (Linux /proc; {} where unavailable)."""
    out: dict[int, ThreadStat] = {}
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                run, wait = f.read().split()[:2]
            with open(f"{base}/{tid}/comm") as f:
                comm = f.read().strip()
            nonvol = 0
            with open(f"{base}/{tid}/status") as f:
                for line in f:
                    if line.startswith("nonvoluntary_ctxt_switches:"):
                        nonvol = int(line.split()[1])
        except (OSError, ValueError):  # the thread exited meanwhile
            continue
        out[int(tid)] = ThreadStat(comm, int(run), int(wait), nonvol)
    return out


def snapshot(pids: Mapping[str, int]) -> dict[str, dict[int, ThreadStat]]:
    return {name: thread_stats(pid) for name, pid in pids.items()}


def thread_deltas(before: Mapping[int, ThreadStat], after: Mapping[int, ThreadStat]
                  ) -> list[dict[str, Any]]:
    """Per-thread use between two snapshots, busiest first (threads that exited are lost)."""
    rows: list[dict[str, Any]] = []
    zero = ThreadStat("", 0, 0, 0)
    for tid, a in after.items():
        b = before.get(tid, zero)
        rows.append({"tid": tid, "comm": a.comm, "cpu_ms": (a.run_ns - b.run_ns) / 1e6,
                     "runq_wait_ms": (a.wait_ns - b.wait_ns) / 1e6,
                     "nonvoluntary": a.nonvoluntary - b.nonvoluntary})
    rows.sort(key=lambda r: r["cpu_ms"], reverse=True)
    return rows


def accounting(key: str, before: Mapping[str, Mapping[int, ThreadStat]],
               after: Mapping[str, Mapping[int, ThreadStat]], n_threads: int
               ) -> dict[str, Any]:
    """Where the CPU went during one sample of path ``key``.

    The model's process is ours for (a), the llama_cpp.server for (b), node A for (c)/(d).
    Its ``n_threads`` busiest threads are llama.cpp's compute threads (the generating
    thread plus ggml's workers, which spin between tokens); everything else in that
    process (event loop, HTTP server, libp2p) is "other". For (b)-(d) our own process is
    the HTTP client; node B is the relay in (d).
    """
    model_proc = {"a": "bench", "b": "llama-server", "c": "node-a", "d": "node-a"}[key]
    procs: dict[str, Any] = {}
    for name in after:
        rows = thread_deltas(before.get(name, {}), after[name])
        procs[name] = {"cpu_ms": sum(r["cpu_ms"] for r in rows),
                       "runq_wait_ms": sum(r["runq_wait_ms"] for r in rows),
                       "nonvoluntary": sum(r["nonvoluntary"] for r in rows),
                       "threads": [{k: rnd(v, 3) if isinstance(v, float) else v
                                    for k, v in r.items()} for r in rows[:6]]}
        procs[name]["_rows"] = rows
    rows = procs[model_proc].pop("_rows")
    compute, other = rows[:n_threads], rows[n_threads:]
    out: dict[str, Any] = {
        "model_process": model_proc,
        "compute_cpu_ms": sum(r["cpu_ms"] for r in compute),
        "compute_runq_wait_ms": sum(r["runq_wait_ms"] for r in compute),
        "compute_nonvoluntary": sum(r["nonvoluntary"] for r in compute),
        "model_process_other_cpu_ms": sum(r["cpu_ms"] for r in other),
        "relay_cpu_ms": procs["node-b"]["cpu_ms"] if key == "d" and "node-b" in procs
        else None,
        "client_cpu_ms": procs["bench"]["cpu_ms"] if key != "a" else None,
    }
    involved = {model_proc, "bench"} | ({"node-b"} if key == "d" else set())
    for p in procs.values():
        p.pop("_rows", None)
    out["uninvolved_cpu_ms"] = sum(p["cpu_ms"] for n, p in procs.items() if n not in involved)
    out["all_cpu_ms"] = sum(p["cpu_ms"] for p in procs.values())
    out["processes"] = {n: {k: (rnd(v, 3) if isinstance(v, float) else v)
                            for k, v in p.items()} for n, p in procs.items()}
    return out


# --------------------------------------------------------------------------- one sample


def _timing(t0: float, chunk_t: Sequence[float], t_end: float, tokens: int) -> dict[str, Any]:
    first = chunk_t[0] if chunk_t else None
    last = chunk_t[-1] if chunk_t else None
    span = (last - first) if first is not None and last is not None else 0.0
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(chunk_t)]
    return {
        "ttft_ms": None if first is None else (first - t0) * 1000,
        "total_s": t_end - t0,
        # The brief's definition: completion tokens / (last text chunk - first text chunk).
        "tokens_per_s": tokens / span if span > 0 and tokens else None,
        "e2e_tokens_per_s": tokens / (t_end - t0) if tokens else None,
        "chunks": len(chunk_t),
        "gap_ms": {"p50": rnd(percentile(gaps, 50)), "p95": rnd(percentile(gaps, 95)),
                   "max": rnd(max(gaps)) if gaps else None},
        "chunk_ms": [round((t - t0) * 1000, 3) for t in chunk_t],
    }


def run_direct(llm: Any, prompt: str, prompt_tokens: int, tokens: int, seed: int
               ) -> dict[str, Any]:
    """Path (a): create_completion(stream=True) in this process."""
    import llama_cpp

    ctx = llm._ctx.ctx
    with contextlib.suppress(AttributeError):
        llama_cpp.llama_perf_context_reset(ctx)
    texts: list[str] = []
    chunk_t: list[float] = []
    finish = None
    t0 = now()
    for chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_p=0.95,
                                       top_k=40, repeat_penalty=1.0, seed=seed, stream=True):
        t = now()
        choice = chunk["choices"][0]
        if choice["text"]:
            chunk_t.append(t)
            texts.append(choice["text"])
        finish = choice.get("finish_reason") or finish
    t_end = now()
    # The stream carries no usage. llama.cpp evaluates every yielded token except the last
    # one (and drops an end-of-text token), so the context length tells the count exactly.
    completion = llm.n_tokens - prompt_tokens + (1 if finish == "length" else 0)
    sample = {"completion_tokens": completion, "tokens_source": "llama n_tokens",
              "finish_reason": finish, "text": "".join(texts),
              **_timing(t0, chunk_t, t_end, completion)}
    try:
        perf = llama_cpp.llama_perf_context(ctx)
        sample["llama_perf"] = {"eval_ms": rnd(perf.t_eval_ms), "n_eval": perf.n_eval,
                                "prompt_eval_ms": rnd(perf.t_p_eval_ms),
                                "n_prompt_eval": perf.n_p_eval}
    except AttributeError:
        sample["llama_perf"] = None
    return sample


def run_http(client: httpx.Client, base: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Paths (b)-(d): POST /v1/completions, stream=true, read as SSE."""
    texts: list[str] = []
    chunk_t: list[float] = []
    finish = None
    usage = None
    t0 = now()
    with client.stream("POST", f"{base}/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            resp.read()
            raise BenchError(f"{base}: HTTP {resp.status_code}: {resp.text[:300]}")
        served_by = resp.headers.get("x-peerllm-served-by")
        # Read to the end (past [DONE]) so the connection stays reusable.
        for line in resp.iter_lines():
            t = now()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                continue
            obj = json.loads(data)
            if "error" in obj:
                raise BenchError(f"{base}: error in stream: {obj['error']}")
            for choice in obj.get("choices") or []:
                text = choice.get("text") or ""
                if text:
                    chunk_t.append(t)
                    texts.append(text)
                finish = choice.get("finish_reason") or finish
            usage = obj.get("usage") or usage
    t_end = now()
    if usage is not None:
        completion, source = int(usage["completion_tokens"]), "usage"
    else:  # llama_cpp.server streams no usage; it sends one chunk per token
        completion, source = len(chunk_t), "chunks"
    return {"completion_tokens": completion, "tokens_source": source, "finish_reason": finish,
            "served_by": served_by, "text": "".join(texts),
            **_timing(t0, chunk_t, t_end, completion)}


# --------------------------------------------------------------------------- setting up


def missing_server_extras() -> list[str]:
    return [dist for mod, dist in SERVER_EXTRAS if importlib.util.find_spec(mod) is None]


def model_path() -> Path:
    from peerllm.inference.catalog import assemble_bundled

    return assemble_bundled()


def open_direct(path: Path, n_ctx: int, threads: int) -> Any:
    """The Llama for (a), built like the engine builds it (LlamaBackend/_open_llama)."""
    from peerllm.inference.llama import _peer_llama_class

    llm = _peer_llama_class()(str(path), use_extra_bufts=False, progress=None, n_ctx=n_ctx,
                              n_gpu_layers=0, n_threads=threads, n_threads_batch=threads,
                              verbose=False)
    if llm._model.params.use_extra_bufts:
        raise BenchError("(a): use_extra_bufts did not apply")
    return llm


def _get_json(url: str) -> Any | None:
    try:
        r = httpx.get(url, trust_env=False, timeout=3)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        return r.json()
    except ValueError:
        return None


def _wait_http(child: Child, url: str, what: str, timeout_s: float = START_TIMEOUT_S) -> Any:
    def probe() -> Any | None:
        if not child.alive():
            raise BenchError(f"{what} exited with code {child.proc.returncode}:\n"
                             f"{child.log_tail()}")
        return _get_json(url)

    got = wait_until(probe, timeout_s=timeout_s, interval_s=0.2)
    if got is None:
        raise BenchError(f"{what} did not answer {url} within {timeout_s:.0f} s:\n"
                         f"{child.log_tail()}")
    return got


def node_argv(work: Path, name: str, p2p_port: int, api_port: int, extra: Sequence[str]
              ) -> list[str]:
    return [sys.executable, "-m", "peerllm", "node", "--data-dir", str(work / name),
            "--name", name, "--listen", f"/ip4/127.0.0.1/tcp/{p2p_port}",
            "--api", f"127.0.0.1:{api_port}", "--no-mdns", *extra]


def model_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment for every child: no inherited MODEL_*/MODELS_* settings."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("MODEL_", "MODELS_"))}
    env.pop("MODEL", None)  # llama_cpp.server reads its settings from the environment too
    env.update(MODEL_THREADS=str(args.threads), MODEL_CONTEXT_SIZE=str(args.ctx),
               MODEL_USE_EXTRA_BUFTS="false", MODEL_GPU_LAYERS="0")
    return env


@dataclass
class Setup:
    urls: dict[str, str]
    pids: dict[str, int]
    children: dict[str, Child]
    config: dict[str, Any]


def start_servers(group: ProcessGroup, args: argparse.Namespace, paths: Sequence[str],
                  path: Path, work: Path) -> Setup:
    env = model_env(args)
    urls: dict[str, str] = {}
    children: dict[str, Child] = {}
    config: dict[str, Any] = {}
    b_port, a_p2p, a_api, b_p2p, b_api = free_ports(5)
    if "b" in paths:
        children["llama-server"] = group.spawn("llama-server", [
            sys.executable, "-c", LLAMA_SERVER_LAUNCHER, "--model", str(path),
            "--model_alias", MODEL_ID, "--n_ctx", str(args.ctx), "--n_threads",
            str(args.threads), "--n_threads_batch", str(args.threads), "--n_gpu_layers", "0",
            "--verbose", "False", "--host", "127.0.0.1", "--port", str(b_port)],
            work / "llama-server.log", env=env)
        urls["b"] = f"http://127.0.0.1:{b_port}"
    if "c" in paths or "d" in paths:
        children["node-a"] = group.spawn(
            "node-a", node_argv(work, "node-a", a_p2p, a_api, ["--preload", MODEL_ID]),
            work / "node-a.log", env=env)
        urls["c"] = f"http://127.0.0.1:{a_api}"
        info = _wait_http(children["node-a"], urls["c"] + "/v1/node/info", "node A")
        peer_a = info["node"]["peer_id"]
        config["node_a_peer_id"] = peer_a
        if "d" in paths:
            children["node-b"] = group.spawn("node-b", node_argv(
                work, "node-b", b_p2p, b_api,
                ["--no-default-model", "--bootstrap", f"/ip4/127.0.0.1/tcp/{a_p2p}/p2p/{peer_a}"]),
                work / "node-b.log", env=env)
            urls["d"] = f"http://127.0.0.1:{b_api}"

        def a_loaded() -> Any | None:
            if not children["node-a"].alive():
                raise BenchError(f"node A exited:\n{children['node-a'].log_tail()}")
            st = _get_json(f"{urls['c']}/v1/models/{MODEL_ID}")
            if st and st.get("state") == "failed":
                raise BenchError(f"node A failed to load the model: {st.get('error')}")
            return st if st and st.get("state") == "loaded" else None

        st = wait_until(a_loaded, timeout_s=START_TIMEOUT_S, interval_s=0.2)
        if st is None:
            raise BenchError(f"node A never loaded {MODEL_ID}:\n{children['node-a'].log_tail()}")
        config["node_a_model"] = st
        # The API names the file, not its path, to callers that are not admins.
        if Path(str(st.get("path"))).name != path.name:
            raise BenchError(f"node A serves {st.get('path')}, not {path.name}")
    if "d" in paths:
        def b_sees_model() -> bool | None:
            if not children["node-b"].alive():
                raise BenchError(f"node B exited:\n{children['node-b'].log_tail()}")
            data = _get_json(urls["d"] + "/v1/models")
            for m in (data or {}).get("data", []):
                if m.get("id") == MODEL_ID and any(
                        p.get("peer_id") == config["node_a_peer_id"]
                        for p in m.get("peerllm", {}).get("providers", [])):
                    return True
            return None

        if not wait_until(b_sees_model, timeout_s=MESH_TIMEOUT_S, interval_s=0.2):
            raise BenchError(f"node B never saw node A's model:\n"
                             f"{children['node-b'].log_tail()}")
    if "b" in paths:
        _wait_http(children["llama-server"], urls["b"] + "/v1/models", "llama_cpp.server")
        line = wait_until(lambda: next((ln for ln in children["llama-server"].log_text()
                                        .splitlines() if ln.startswith("overhead-bench:")),
                                       None), timeout_s=10)
        config["llama_server_model"] = line
        if line is None or "use_extra_bufts=False" not in line:
            raise BenchError(f"llama_cpp.server did not load with use_extra_bufts=False: {line}")
    pids = {"bench": os.getpid(), **{n: c.pid for n, c in children.items()}}
    return Setup(urls=urls, pids=pids, children=children, config=config)


# --------------------------------------------------------------------------- summary


def _ratio(x: float | None, y: float | None) -> float | None:
    return None if x is None or not y else x / y


def _diff(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def _check(value: float | None, limit: float, op: str) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value >= limit if op == ">=" else value <= limit) else "MISS"


def per_token(samples: Sequence[Mapping[str, Any]], field: str) -> float | None:
    """Median over samples of accounting[field] / completion tokens."""
    vals = [s["accounting"][field] / s["completion_tokens"] for s in samples
            if s.get("accounting") and s["accounting"].get(field) is not None
            and s["completion_tokens"]]
    return median(vals)


def summarize_path(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def med(field: str) -> float | None:
        return median([s[field] for s in samples])

    tps = [s["tokens_per_s"] for s in samples if s["tokens_per_s"] is not None]
    ttfts = [s["ttft_ms"] for s in samples if s["ttft_ms"] is not None]
    gaps95 = [s["gap_ms"]["p95"] for s in samples if s["gap_ms"]["p95"] is not None]
    out = {
        "n": len(samples),
        "tokens_per_s": med("tokens_per_s"),
        "tokens_per_s_min": min(tps) if tps else None,
        "tokens_per_s_max": max(tps) if tps else None,
        "e2e_tokens_per_s": med("e2e_tokens_per_s"),
        "ttft_ms": med("ttft_ms"),
        "ttft_ms_min": min(ttfts) if ttfts else None,
        "ttft_ms_max": max(ttfts) if ttfts else None,
        "total_s": med("total_s"),
        "completion_tokens": [s["completion_tokens"] for s in samples],
        "finish_reasons": sorted({str(s["finish_reason"]) for s in samples}),
        "chunks": median([s["chunks"] for s in samples]),
        "gap_p50_ms": median([s["gap_ms"]["p50"] for s in samples]),
        "gap_p95_ms": median(gaps95),
        "gap_max_ms": max((s["gap_ms"]["max"] or 0.0) for s in samples) if samples else None,
        "per_token": {f: per_token(samples, f) for f in (
            "compute_cpu_ms", "compute_runq_wait_ms", "compute_nonvoluntary",
            "model_process_other_cpu_ms", "relay_cpu_ms", "client_cpu_ms",
            "uninvolved_cpu_ms", "all_cpu_ms")},
    }
    perf = [s["llama_perf"] for s in samples if s.get("llama_perf")]
    if perf:
        out["llama_eval_ms_per_token"] = median([p["eval_ms"] / p["n_eval"] for p in perf
                                                 if p["n_eval"]])
    return out


def text_check(samples: Mapping[str, Sequence[Mapping[str, Any]]], paths: Sequence[str]
               ) -> dict[str, Any]:
    ref_key = paths[0]
    ref = samples[ref_key][0]["text"] if samples[ref_key] else ""
    out: dict[str, Any] = {"reference_path": ref_key, "identical": True, "paths": {}}
    for key in paths:
        diffs = []
        for i, s in enumerate(samples[key]):
            if s["text"] != ref:
                pos = next((j for j, (x, y) in enumerate(zip(s["text"], ref, strict=False))
                            if x != y), min(len(s["text"]), len(ref)))
                diffs.append({"sample": i, "first_difference_at": pos,
                              "here": s["text"][max(0, pos - 20):pos + 40],
                              "reference": ref[max(0, pos - 20):pos + 40]})
        out["paths"][key] = {"identical": not diffs, "differences": diffs}
        out["identical"] = out["identical"] and not diffs
    return out


def print_report(doc: Mapping[str, Any], paths: Sequence[str], tokens: int) -> None:
    summary = doc["summary"]
    a = summary.get("a", {})
    rows = []
    for k in paths:
        s = summary[k]
        spread = f"{fmt(s['tokens_per_s_min'], digits=1)}–{fmt(s['tokens_per_s_max'], digits=1)}"
        rows.append([PATH_NAMES[k], fmt(s["tokens_per_s"], digits=1),
                     fmt(_ratio(s["tokens_per_s"], a.get("tokens_per_s")), digits=3), spread,
                     fmt(s["e2e_tokens_per_s"], digits=1),
                     fmt(_ratio(s["e2e_tokens_per_s"], a.get("e2e_tokens_per_s")), digits=3),
                     fmt(s["ttft_ms"], digits=1),
                     f"{fmt(s['ttft_ms_min'], digits=1)}–{fmt(s['ttft_ms_max'], digits=1)}",
                     fmt(s["total_s"], digits=3),
                     ",".join(str(n) for n in sorted(set(s["completion_tokens"])))])
    print()
    print(f"medians over {doc['args']['runs']} interleaved runs, {tokens} tokens, "
          f"{doc['args']['threads']} threads, greedy")
    print(table(rows, ["path", "tok/s", "x(a)", "tok/s min–max", "e2e tok/s", "x(a)",
                       "TTFT ms", "TTFT min–max", "total s", "tokens"]))
    print()
    for t in doc["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"{t['verdict']:4}  {t['target']}: {value} (target {t['op']} {t['limit']})")
    d = doc["derived"]
    print(f"      TTFT (c)-(a): {fmt(d['ttft_c_minus_a_ms'], ' ms')}, (b)-(a): "
          f"{fmt(d['ttft_b_minus_a_ms'], ' ms')}, (d)-(c): {fmt(d['ttft_d_minus_c_ms'], ' ms')}")
    tp = d.get("token_path", {})
    print(f"      token path (CPU ms per token, medians): serving node A outside llama.cpp "
          f"compute: local (c) {fmt(tp.get('serving_a_local_ms'), digits=3)}, mesh (d) "
          f"{fmt(tp.get('serving_a_mesh_ms'), digits=3)}; relaying node B (d) "
          f"{fmt(tp.get('relay_b_ms'), digits=3)}; mesh-added TTFT "
          f"{fmt(tp.get('mesh_added_ttft_ms'), ' ms')}")
    tc = doc["text_check"]
    if tc["identical"]:
        print(f"      greedy text identical on every path and run ({tokens} tokens)")
    else:
        bad = [k for k, v in tc["paths"].items() if not v["identical"]]
        print(f"NOTE  greedy text differs from ({tc['reference_path']}) on: {', '.join(bad)} "
              "(see text_check in the JSON)")
    early = doc["stopped_early"]
    if early:
        print(f"NOTE  {len(early)} sample(s) did not generate exactly {tokens} tokens: {early}")
    else:
        print(f"      every sample generated exactly {tokens} tokens (finish_reason=length)")
    print()
    print("where the time goes (medians; per-token values are per completion token):")
    rows = []
    for k in paths:
        s = summary[k]
        pt = s["per_token"]
        ms_tok = None if not s["tokens_per_s"] else 1000 / s["tokens_per_s"]
        a_ms = None if not a.get("tokens_per_s") else 1000 / a["tokens_per_s"]
        rows.append([PATH_NAMES[k], fmt(ms_tok, digits=2), fmt(_diff(ms_tok, a_ms), digits=2),
                     fmt(pt["compute_cpu_ms"], digits=2),
                     fmt(pt["compute_runq_wait_ms"], digits=3),
                     fmt(pt["compute_nonvoluntary"], digits=2),
                     fmt(pt["model_process_other_cpu_ms"], digits=3),
                     fmt(pt["relay_cpu_ms"], digits=3), fmt(pt["client_cpu_ms"], digits=3),
                     fmt(s["chunks"], digits=0),
                     f"{fmt(s['gap_p50_ms'], digits=1)}/{fmt(s['gap_p95_ms'], digits=1)}"
                     f"/{fmt(s['gap_max_ms'], digits=0)}"])
    print(table(rows, ["path", "ms/tok", "+vs(a)", "llama CPU", "llama runq", "preempt",
                       "other CPU", "relay CPU", "client CPU", "chunks", "gap p50/p95/max"]))
    if a.get("llama_eval_ms_per_token") is not None:
        print(f"  llama.cpp's own decode time in (a) (llama_perf t_eval / n_eval): "
              f"{a['llama_eval_ms_per_token']:.2f} ms/token")
    print("  llama CPU/runq/preempt: the model process's busiest --threads threads (llama.cpp "
          "compute): CPU ms, run-queue wait ms and involuntary switches per token.")
    print("  other CPU: the rest of the model process (event loop, HTTP server, libp2p); "
          "relay: node B; client: this process parsing SSE.")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128, help="completion tokens per request")
    ap.add_argument("--runs", type=int, default=5, help="timed runs (each runs every path)")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT, help="completion prompt")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads on every path")
    ap.add_argument("--ctx", type=int, default=2048, help="context size on every path")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--paths", default="abcd",
                    help="which paths to run, e.g. 'acd' (default abcd; (a) is required)")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR,
                    help="where overhead-<timestamp>.json goes")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the temp dir with the servers' logs and data dirs")
    args = ap.parse_args(argv)
    paths = [p for p in ALL_PATHS if p in args.paths]
    if "a" not in paths or set(args.paths) - set(ALL_PATHS):
        ap.error("--paths: letters from abcd, including a (the reference)")
    if args.tokens < 2 or args.runs < 1 or args.threads < 1:
        ap.error("--tokens must be >= 2, --runs and --threads >= 1")
    args.path_list = paths
    return args


@dataclass
class Measured:
    setup: Setup
    prompt_tokens: int
    warmups: dict[str, dict[str, Any]]
    samples: dict[str, list[dict[str, Any]]]


def _check_served_by(setup: Setup, warmups: Mapping[str, Mapping[str, Any]]) -> None:
    for key in ("c", "d"):
        if key in warmups and warmups[key]["served_by"] != setup.config["node_a_peer_id"]:
            raise BenchError(f"({key}) was served by {warmups[key]['served_by']}, not node A")


def _check_alive(setup: Setup) -> None:
    for name, child in setup.children.items():
        if not child.alive():
            raise BenchError(f"{name} died during the runs:\n{child.log_tail()}")


def measure(args: argparse.Namespace, paths: Sequence[str], path: Path, work: Path,
            bodies: Mapping[str, Mapping[str, Any]]) -> Measured:
    """Start the servers, warm every path up, then run the interleaved timed runs."""
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in paths}
    warmups: dict[str, dict[str, Any]] = {}
    llm = open_direct(path, args.ctx, args.threads)
    try:
        prompt_tokens = len(llm.tokenize(args.prompt.encode(), add_bos=True, special=True))
        with managed_processes() as group, contextlib.ExitStack() as stack:
            setup = start_servers(group, args, paths, path, work)
            clients = {k: stack.enter_context(httpx.Client(
                trust_env=False, timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=10)))
                for k in paths if k != "a"}

            def run(key: str) -> dict[str, Any]:
                if key == "a":
                    return run_direct(llm, args.prompt, prompt_tokens, args.tokens, args.seed)
                return run_http(clients[key], setup.urls[key], bodies[key])

            for key in paths:  # model load, connection, KV prefix: all paths start alike
                warmups[key] = w = run(key)
                print(f"warm-up {key}: {w['completion_tokens']} tokens, "
                      f"{fmt(w['tokens_per_s'], ' tok/s', 1)}", file=sys.stderr)
            _check_served_by(setup, warmups)
            ages = [now() - c.started_at for n, c in setup.children.items()
                    if n.startswith("node-")]
            if ages and min(ages) < NODE_MIN_AGE_S:
                wait = NODE_MIN_AGE_S - min(ages)
                print(f"waiting {wait:.0f} s until the nodes are past their first 30 s "
                      "(fast DHT refresh)", file=sys.stderr)
                time.sleep(wait)
            for r in range(args.runs):
                for key in paths:
                    before = snapshot(setup.pids)
                    s = run(key)
                    after = snapshot(setup.pids)
                    s["run"] = r
                    s["accounting"] = accounting(key, before, after, args.threads)
                    samples[key].append(s)
                    print(f"run {r + 1}/{args.runs} {key}: {fmt(s['tokens_per_s'], ' tok/s', 1)}"
                          f", TTFT {fmt(s['ttft_ms'], ' ms', 1)}, {s['completion_tokens']} "
                          f"tokens ({s['finish_reason']}), {s['chunks']} chunks",
                          file=sys.stderr)
            _check_alive(setup)
    finally:
        llm.close()
    return Measured(setup=setup, prompt_tokens=prompt_tokens, warmups=warmups,
                    samples=samples)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths: list[str] = list(args.path_list)
    skipped: dict[str, str] = {}
    if "b" in paths:
        missing = missing_server_extras()
        if missing:
            version = importlib.metadata.version("llama-cpp-python")
            msg = (f"path (b) skipped: llama_cpp.server needs {', '.join(missing)}. Install them "
                   f"without rebuilding llama-cpp-python:\n    {sys.executable} -m pip install "
                   f"'llama-cpp-python[server]=={version}'\n  (or by name: pip install "
                   + " ".join(d for _, d in SERVER_EXTRAS) + ")")
            print(msg, file=sys.stderr)
            skipped["b"] = msg
            paths.remove("b")
    path = model_path()
    slug = timestamp_slug()
    work = Path(tempfile.mkdtemp(prefix=f"peerllm-overhead-{slug}-"))
    machine = machine_info()
    machine["versions"].update({d: _version(d) for d in (
        "llama_cpp_python", "fastapi", "uvicorn", "sse-starlette", "starlette-context",
        "pydantic-settings")})
    prompt_body = {"prompt": args.prompt, "max_tokens": args.tokens, "temperature": 0.0,
                   "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.0, "seed": args.seed,
                   "stream": True}
    bodies = {"b": {"model": MODEL_ID, **prompt_body},
              "c": {"model": MODEL_ID, **prompt_body, "stream_options": {"include_usage": True}}}
    bodies["d"] = bodies["c"]
    print(f"model {path}; paths {''.join(paths)}; logs in {work}", file=sys.stderr)
    measured: Measured | None = None
    try:
        measured = measure(args, paths, path, work, bodies)
    except BenchError as exc:
        print(f"overhead benchmark failed: {exc}", file=sys.stderr)
    except Exception:
        traceback.print_exc()
    finally:
        if measured is not None and not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs and data dirs kept in {work}", file=sys.stderr)
    if measured is None:
        return 1
    samples, setup, prompt_tokens = measured.samples, measured.setup, measured.prompt_tokens
    warmups = measured.warmups

    summary = {k: summarize_path(samples[k]) for k in paths}
    a = summary["a"]

    def med_of(key: str, field: str) -> float | None:
        return summary[key][field] if key in summary else None

    derived = {
        "ttft_c_minus_a_ms": _diff(med_of("c", "ttft_ms"), a["ttft_ms"]),
        "ttft_b_minus_a_ms": _diff(med_of("b", "ttft_ms"), a["ttft_ms"]),
        "ttft_d_minus_c_ms": _diff(med_of("d", "ttft_ms"), med_of("c", "ttft_ms")),
        **{f"tps_ratio_{k}_to_a": _ratio(med_of(k, "tokens_per_s"), a["tokens_per_s"])
           for k in paths},
        # #12's token-path figures: what serving (A) and relaying (B) cost per token
        # beyond llama.cpp's own compute threads, and what the mesh adds to TTFT.
        "token_path": {
            "serving_a_local_ms": summary["c"]["per_token"]["model_process_other_cpu_ms"]
            if "c" in summary else None,
            "serving_a_mesh_ms": summary["d"]["per_token"]["model_process_other_cpu_ms"]
            if "d" in summary else None,
            "relay_b_ms": summary["d"]["per_token"]["relay_cpu_ms"] if "d" in summary
            else None,
            "mesh_added_ttft_ms": _diff(med_of("d", "ttft_ms"), med_of("c", "ttft_ms")),
        },
        **{f"e2e_tps_ratio_{k}_to_a": _ratio(med_of(k, "e2e_tokens_per_s"),
                                             a["e2e_tokens_per_s"]) for k in paths},
    }
    targets = [
        ("(c) tokens/s / (a) tokens/s", derived.get("tps_ratio_c_to_a"), TPS_RATIO_TARGET, ">="),
        ("(d) tokens/s / (a) tokens/s", derived.get("tps_ratio_d_to_a"), TPS_RATIO_TARGET, ">="),
        ("added TTFT through the mesh, median (d) - median (c), ms",
         derived["ttft_d_minus_c_ms"], MESH_TTFT_TARGET_MS, "<="),
        ("(c) tokens/s / (b) tokens/s", _ratio(med_of("c", "tokens_per_s"),
                                               med_of("b", "tokens_per_s")), 1.0, ">="),
    ]
    stopped_early = [f"{k}#{i}: {s['completion_tokens']} tokens, {s['finish_reason']}"
                     for k in paths for i, s in enumerate(samples[k])
                     if s["completion_tokens"] != args.tokens or s["finish_reason"] != "length"]
    doc: dict[str, Any] = {
        "benchmark": "overhead",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "model_path": str(path),
        "model_id": MODEL_ID,
        "prompt": args.prompt,
        "prompt_tokens": prompt_tokens,
        "sampling": {k: v for k, v in prompt_body.items() if k not in ("prompt", "stream")},
        "paths": {k: PATH_NAMES[k] for k in paths},
        "skipped": skipped,
        "config": setup.config,
        "definitions": {
            "ttft_ms": "request sent (call made for (a)) -> first non-empty text chunk",
            "tokens_per_s": "completion tokens / (last text chunk - first text chunk)",
            "e2e_tokens_per_s": "completion tokens / (request sent -> stream finished)",
            "accounting": "per-thread /proc/<pid>/task/<tid>/schedstat and status deltas "
                          "around each sample; compute = the model process's --threads "
                          "busiest threads",
        },
        "summary": summary,
        "derived": derived,
        "targets": [{"target": name, "value": value, "limit": limit, "op": op,
                     "verdict": _check(value, limit, op)} for name, value, limit, op in targets],
        "text_check": text_check(samples, paths),
        "stopped_early": stopped_early,
        "warmups": warmups,
        "samples": samples,
    }
    out = write_results(args.out, "overhead", doc, slug)
    print_report(doc, paths, args.tokens)
    print(f"\nresults: {out}")
    return 0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
