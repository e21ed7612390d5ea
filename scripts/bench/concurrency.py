"""Many users at once: aggregate tokens/s, per-stream tokens/s, TTFT and CPU per token at
1, 2, 4, 8, 16 concurrent streams, on four servers of the same model, in one run.

  (a) `peerllm node` A serving the model itself
  (b) `peerllm node` B (--no-default-model) relaying to node A over libp2p (B -> A)
  (c) python -m llama_cpp.server (llama-cpp-python's own server)
  (d) llama.cpp's llama-server, built from the llama.cpp sources in the sdist of the
      installed llama-cpp-python (scripts/bench/llama_server.py; --build-llama-server
      builds it once into ~/.cache/peerllm/bench/; not built: (d) is skipped, said so)

Same GGUF file (the bundled gemma3-270m-q4_k_m), same threads, same context per sequence,
greedy (temperature 0, fixed seed, repeat_penalty 1), and the same number of parallel
slots on (a) and (d): --parallel N forces it on node A (and so B -> A) and llama-server;
without it node A uses its own default and the slots it resolved (node-info
load.capacity) are given to llama-server. (c) has no batching (one request at a time).
Every process runs with OMP_WAIT_POLICY=PASSIVE.

A "sample" sends C streaming POST /v1/completions at once (C different prompts, --tokens
each) and records the wall time from release to the last stream's end, the completion
tokens, each stream's TTFT and tokens/s, and the CPU seconds of every process involved
(psutil, /proc). Per run, every concurrency level runs every path, the path order
rotating, so machine noise hits them alike. Medians over --runs; ratios are paired within
a run. Targets (issue #12): aggregate at 4 streams >= 2.0x and at 8 >= 2.5x the
single-stream rate; (a) >= 0.9x (d) and (b) >= 0.95x (a) at every level; mesh-added TTFT
(b)-(a) <= 5 ms at 1 stream. JSON to scripts/bench/results/concurrency-<ts>.json, a PNG
plot beside it, a summary on stdout.

    python scripts/bench/concurrency.py --build-llama-server       # full run (~25 min)
    python scripts/bench/concurrency.py --quick --parallel 4       # levels 1,2,4, 1 run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_server
from _common import (
    DEFAULT_RESULTS_DIR,
    ProcessGroup,
    fmt,
    free_ports,
    machine_info,
    managed_processes,
    now,
    timestamp_slug,
    write_results,
)
from _concurrency_report import PATH_NAMES, plot, print_report, summarize
from _load import concurrent_streams, cpu_delta, cpu_of, http_client
from _servers import (
    MODEL_ID,
    OMP_ENV,
    OMP_POLICIES,
    BenchError,
    Server,
    child_env,
    missing_server_extras,
    node_config,
    node_slots,
    start_llama_cpp_server,
    start_llama_server,
    start_node,
    use_omp_wait_policy,
    wait_sees_model,
)

PROMPTS = ("Once upon a time, in a small village by the sea,",
           "The history of the Roman Empire begins",
           "Here is a recipe for a simple tomato soup:",
           "The three laws of thermodynamics are",
           "In computer science, a hash table is",
           "Dear diary, today I went to the market and",
           "The quick brown fox jumps over the lazy dog. Then",
           "A guide to planting a vegetable garden: first,")
ALL_PATHS = ("a", "b", "c", "d")
NODE_MIN_AGE_S = 32.0  # node.py refreshes the DHT every second for a node's first 30 s
# The processes whose CPU a path uses (the client, this process, is recorded apart).
INVOLVED = {"a": ("node-a",), "b": ("node-a", "node-b"), "c": ("llama-cpp-server",),
            "d": ("llama-server",)}


def body(key: str, i: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"model": MODEL_ID, "prompt": PROMPTS[i % len(PROMPTS)],
                           "max_tokens": args.tokens, "temperature": 0.0, "top_p": 0.95,
                           "top_k": 40, "repeat_penalty": 1.0, "seed": args.seed,
                           "stream": True}
    if key != "c":  # llama_cpp.server sends one chunk per token and no usage
        out["stream_options"] = {"include_usage": True}
    return out


def start(group: ProcessGroup, args: argparse.Namespace, work: Path, model: Path,
          binary: Path | None) -> tuple[dict[str, Server], int]:
    """Every server of ``args.path_list``; returns them by path and the slots used."""
    env = child_env(args.threads, args.ctx)
    a_p2p, a_api, b_p2p, b_api, c_port, d_port = free_ports(6)
    room = max(args.levels) * 2
    cfg = node_config(parallel=args.parallel, max_queue=room, streams_per_peer=room,
                      serve_model=True)
    servers: dict[str, Server] = {}
    node_a = start_node(group, work, "node-a", (a_p2p, a_api), env=env, config=cfg)
    servers["a"] = node_a
    slots = node_slots(node_a) or 1
    if args.parallel is not None and slots != args.parallel:
        raise BenchError(f"node A resolved {slots} slots although --parallel {args.parallel}")
    if "b" in args.path_list:
        servers["b"] = start_node(
            group, work, "node-b", (b_p2p, b_api), env=env, serve_model=False,
            config=node_config(parallel=None, max_queue=room, streams_per_peer=room,
                               serve_model=False),
            bootstrap=[node_a.info["multiaddr"]])
        wait_sees_model(servers["b"], [node_a])
    if "c" in args.path_list:
        servers["c"] = start_llama_cpp_server(group, work, c_port, model, env=env,
                                              threads=args.threads, ctx=args.ctx)
    if "d" in args.path_list and binary is not None:
        servers["d"] = start_llama_server(group, work, d_port, model, binary, env=env,
                                          threads=args.threads, ctx=args.ctx, parallel=slots)
        if servers["d"].info.get("total_slots") not in (None, slots):
            raise BenchError(f"llama-server runs {servers['d'].info['total_slots']} slots, "
                             f"not {slots}")
    return servers, slots


def sample(key: str, level: int, args: argparse.Namespace, servers: dict[str, Server],
           clients: Sequence[httpx.Client]) -> dict[str, Any]:
    """C streams at once on path ``key``: wall time, tokens, TTFTs, CPU of each process."""
    pids = {s.child.name: s.pid for s in servers.values()}
    pids["bench"] = os.getpid()
    before = cpu_of(pids)
    t0, t1, streams = concurrent_streams(servers[key].url,
                                         [body(key, i, args) for i in range(level)],
                                         clients[:level])
    cpu = cpu_delta(before, cpu_of(pids))
    tokens = sum(s.tokens for s in streams)
    return {"path": key, "level": level, "wall_s": t1 - t0, "tokens": tokens,
            "aggregate_tokens_per_s": tokens / (t1 - t0) if t1 > t0 else None,
            "failed": sum(not s.ok for s in streams),
            "errors": sorted({s.error for s in streams if s.error})[:5],
            "cpu_s": cpu,
            "cpu_ms_per_token": {n: (None if c is None or not tokens else c * 1000 / tokens)
                                 for n, c in cpu.items()},
            "involved": list(INVOLVED[key]),
            "served_by": sorted({s.served_by for s in streams if s.served_by}),
            "streams": [s.as_json(t0) for s in streams]}


def measure(args: argparse.Namespace, work: Path, model: Path, binary: Path | None
            ) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    with managed_processes() as group, contextlib.ExitStack() as stack:
        servers, slots = start(group, args, work, model, binary)
        paths = [k for k in args.path_list if k in servers]
        clients = {k: [stack.enter_context(http_client()) for _ in range(max(args.levels))]
                   for k in paths}
        for key in paths:  # connections, first prompt, caches: every path starts alike
            w = sample(key, 1, args, servers, clients[key])
            print(f"warm-up {key}: {w['tokens']} tokens, failed {w['failed']} {w['errors']}",
                  file=sys.stderr)
            if w["failed"]:
                raise BenchError(f"warm-up of {PATH_NAMES[key]} failed: {w['errors']}")
            peer_a = servers["a"].info["node"]["peer_id"]
            if key in ("a", "b") and w["served_by"] != [peer_a]:
                raise BenchError(f"{PATH_NAMES[key]} was served by {w['served_by']}, not "
                                 f"node A ({peer_a})")
        ages = [now() - v.child.started_at for v in servers.values()
                if v.name.startswith("node-")]
        if ages and min(ages) < NODE_MIN_AGE_S:
            time.sleep(NODE_MIN_AGE_S - min(ages))
        for r in range(args.runs):
            for li, level in enumerate(args.levels):
                shift = (r + li) % len(paths)
                for key in paths[shift:] + paths[:shift]:
                    s = sample(key, level, args, servers, clients[key])
                    s["run"] = r
                    samples.append(s)
                    print(f"run {r + 1}/{args.runs} C={level:<2} {key}: "
                          f"{fmt(s['aggregate_tokens_per_s'], ' tok/s', 1)}, "
                          f"{s['tokens']} tokens, failed {s['failed']}", file=sys.stderr)
            for srv in servers.values():
                if not srv.child.alive():
                    raise BenchError(f"{srv.name} died during the runs:\n"
                                     f"{srv.child.log_tail()}")
        setup = {k: {"name": v.name, "url": v.url, "info": v.info} for k, v in servers.items()}
    return {"samples": samples, "slots": slots, "paths": paths, "servers": setup}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,2,4,8,16", help="concurrency levels, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (each runs every level)")
    ap.add_argument("--tokens", type=int, default=64, help="completion tokens per stream")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads on every server")
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence (slot)")
    ap.add_argument("--parallel", type=int, default=None,
                    help="batch slots on node A and llama-server (default: node A's own)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--omp-wait-policy", choices=OMP_POLICIES, default="default",
                    help="OMP_WAIT_POLICY for every server (default: unset, as peerllm node)")
    ap.add_argument("--paths", default="abcd", help="which paths to run (a is required)")
    ap.add_argument("--build-llama-server", action="store_true",
                    help="build llama-server for (d) first if it is not built yet")
    ap.add_argument("--quick", action="store_true",
                    help="a check that everything works: levels 1,2,4, 1 run, 16 tokens")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    ap.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = ap.parse_args(argv)
    if args.quick:
        args.levels, args.runs, args.tokens = "1,2,4", 1, 16
    args.levels = sorted({int(x) for x in str(args.levels).split(",") if x.strip()})
    args.path_list = [p for p in ALL_PATHS if p in args.paths]
    if "a" not in args.path_list or set(args.paths) - set(ALL_PATHS):
        ap.error("--paths: letters from abcd, including a")
    if not args.levels or min(args.levels) < 1 or args.runs < 1 or args.tokens < 2:
        ap.error("--levels must be >= 1, --runs >= 1, --tokens >= 2")
    return args


def llama_server_binary(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """The llama-server for (d), or None and why (d) is skipped."""
    if "d" not in args.path_list:
        return None, "not asked for (--paths)"
    if args.build_llama_server:
        try:
            return llama_server.build(), None
        except llama_server.BuildError as exc:
            return None, f"the build failed: {exc}"
    found = llama_server.built_binary()
    if found is None:
        return None, (f"llama-server is not built ({llama_server.binary_path()}); run with "
                      "--build-llama-server (or scripts/bench/llama_server.py) once")
    return found, None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_omp_wait_policy(args.omp_wait_policy)
    machine = machine_info()
    skipped: dict[str, str] = {}
    binary, why = llama_server_binary(args)
    if why and "d" in args.path_list:
        skipped["d"] = why
    if "c" in args.path_list and (missing := missing_server_extras()):
        skipped["c"] = f"llama_cpp.server needs {', '.join(missing)} (pip install -e '.[bench]')"
        args.path_list.remove("c")
    for key, reason in skipped.items():
        print(f"SKIP  {PATH_NAMES[key]}: {reason}", file=sys.stderr)
    from peerllm.inference.catalog import assemble_bundled

    model = assemble_bundled()
    work = Path(tempfile.mkdtemp(prefix="peerllm-concurrency-"))
    slug = timestamp_slug()
    ok = False
    try:
        measured = measure(args, work, model, binary)
        ok = True
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)
    doc: dict[str, Any] = {
        "benchmark": "concurrency", "machine": machine,
        "load_average_at_end": list(os.getloadavg()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {"id": MODEL_ID, "file": model.name, "bytes": model.stat().st_size},
        "environment": dict(OMP_ENV), "llama_server_binary": str(binary) if binary else None,
        "skipped": skipped, "logs_dir": str(work) if args.keep_logs else None, **measured}
    doc["summary"], doc["targets"] = summarize(doc)
    path = write_results(args.out, "concurrency", doc, slug)
    png = plot(doc, path.with_suffix(".png"))
    print_report(doc)
    print(f"\nJSON: {path}" + (f"\nplot: {png}" if png else "\nplot: skipped (no matplotlib)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
