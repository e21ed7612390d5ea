"""Soak: a three-node mesh under 16 concurrent streaming clients for --minutes (default 10).

Three `peerllm node`s on 127.0.0.1, each serving the bundled model, bootstrapped to the
first. Client i enters the mesh at node i mod 3 (so every node both serves and relays)
and loops until the deadline: a streaming POST /v1/completions with a prompt of mixed
length (short, medium or long), a mixed completion length, and about one request in six
hung up after a few chunks (a user who leaves mid-stream: the node must cancel it and
free the slot and the libp2p stream). The run stops by itself: no new request starts
after the deadline, the ones in flight finish (bounded by the request timeout).

Every --sample-s seconds it records, per node: RSS (psutil), open file descriptors
(/proc/<pid>/fd), the inference streams it is serving (the `peerllm_served_streams`
gauge of /metrics: streams from peers; nodes have no count of the streams they opened
to others, fds stand in for those) and node-info load (active, queued). Before the load
starts and after it ends (10 s later, plus the time a kept-alive infer stream may idle
where streams are reused) it takes an idle reading, so leaks show as idle-after minus
idle-before.

Report: failed requests (must be 0; a hang-up of ours is not a failure), RSS growth of
every node after the warm-up (first minute, or the first fifth of a short run) < 5 %,
fds and served streams back to their idle values, p95 TTFT per minute (stable: no
minute above 1.5x the median minute). JSON to scripts/bench/results/soak-<ts>.json.

    python scripts/bench/soak.py                    # 10 minutes
    python scripts/bench/soak.py --quick --parallel 4   # 1 minute, a check that it works
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    ProcessGroup,
    free_ports,
    machine_info,
    managed_processes,
    now,
    timestamp_slug,
    write_results,
)
from _load import (
    Stream,
    get_json,
    get_text,
    http_client,
    metric_value,
    process_sample,
    stream_completion,
)
from _servers import (
    MODEL_ID,
    OMP_ENV,
    OMP_POLICIES,
    BenchError,
    Server,
    child_env,
    node_config,
    start_node,
    use_omp_wait_policy,
    wait_sees_model,
)
from _soak_report import print_report, summarize

NODES = 3
MAX_MINUTES = 120.0  # bounded: a typo must not keep a shared machine busy for a day
SETTLE_MARGIN_S = 10.0  # after the load: cancellations and stream closes reach every node
SENTENCE = "The river carried the old boat past fields of wheat and quiet stone houses. "
PROMPT_SENTENCES = (1, 8, 30)  # short, medium, long prompts (~15, ~120, ~450 tokens)
MAX_TOKENS = (16, 48, 96)
HANG_UP_SHARE = 1 / 6


def settle_s() -> float:
    """How long after the load the idle reading waits: the margin, plus the time a served
    infer stream may stay open idle for reuse (wire.infer.REUSE_IDLE_S where the nodes
    keep streams between requests; a kept stream is not a leak until it outlives that)."""
    from peerllm.wire import infer as wi

    return float(getattr(wi, "REUSE_IDLE_S", 0.0)) + SETTLE_MARGIN_S


def start_mesh(group: ProcessGroup, args: argparse.Namespace, work: Path) -> list[Server]:
    env = child_env(args.threads, args.ctx)
    room = 2 * args.clients
    cfg = node_config(parallel=args.parallel, max_queue=room, streams_per_peer=room,
                      serve_model=True)
    ports = free_ports(2 * NODES)
    nodes = [start_node(group, work, "soak-0", (ports[0], ports[1]), env=env, config=cfg)]
    for i in range(1, NODES):
        nodes.append(start_node(group, work, f"soak-{i}", (ports[2 * i], ports[2 * i + 1]),
                                env=env, config=cfg, bootstrap=[nodes[0].info["multiaddr"]]))
    for n in nodes:
        wait_sees_model(n, nodes)
    return nodes


def node_sample(nodes: Sequence[Server], origin: float) -> dict[str, Any]:
    procs = process_sample({n.name: n.pid for n in nodes})
    for n in nodes:
        info = get_json(n.url + "/v1/node/info") or {}
        served = metric_value(get_text(n.url + "/metrics"), "peerllm_served_streams")
        procs[n.name]["served_streams"] = None if served is None else int(served)
        page = get_text(n.url + "/metrics")
        for state in ("active", "idle"):
            opened = metric_value(page, f'peerllm_opened_streams{{state="{state}"}}')
            procs[n.name][f"opened_{state}"] = None if opened is None else int(opened)
        procs[n.name]["load"] = info.get("load")
    return {"t_s": round(now() - origin, 3), "nodes": procs}


def client_loop(i: int, node: Server, deadline: float, args: argparse.Namespace,
                out: list[tuple[int, str, Stream]]) -> None:
    rng = random.Random(args.seed * 1000 + i)
    with http_client() as client:
        while now() < deadline:
            sentences = rng.choice(PROMPT_SENTENCES)
            body = {"model": MODEL_ID, "prompt": f"({i}) " + SENTENCE * sentences,
                    "max_tokens": rng.choice(args.max_tokens), "temperature": 0.7,
                    "seed": rng.randrange(1 << 30), "stream": True,
                    "stream_options": {"include_usage": True}}
            hang_up = rng.randint(1, 6) if rng.random() < HANG_UP_SHARE else None
            s = stream_completion(client, node.url, body, hang_up_after=hang_up)
            out.append((i, node.name, s))


def run_load(nodes: Sequence[Server], args: argparse.Namespace) -> dict[str, Any]:
    origin = now()
    samples = [dict(node_sample(nodes, origin), phase="idle-before")]
    deadline = now() + args.minutes * 60
    results: list[tuple[int, str, Stream]] = []
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(i, nodes[i % NODES], deadline, args, results))
               for i in range(args.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(args.sample_s)
        samples.append(dict(node_sample(nodes, origin), phase="load"))
        for n in nodes:
            if not n.child.alive():
                raise BenchError(f"{n.name} died during the soak:\n{n.child.log_tail()}")
        done = sum(1 for _ in results)
        print(f"t={samples[-1]['t_s']:7.1f} s  requests done {done}, failed "
              f"{sum(not s.ok for _, _, s in results)}", file=sys.stderr)
    load_end = now() - origin
    time.sleep(settle_s())
    samples.append(dict(node_sample(nodes, origin), phase="idle-after"))
    return {"origin_s": 0.0, "load_end_s": round(load_end, 3), "samples": samples,
            "requests": [{"client": i, "entry": name, **s.as_json(origin)}
                         for i, name, s in results]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="load duration (bounded)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent streaming clients")
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads per node (3 nodes share the cores)")
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence (slot)")
    ap.add_argument("--parallel", type=int, default=None,
                    help="batch slots per node (default: the node's own)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="seconds between readings")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--omp-wait-policy", choices=OMP_POLICIES, default="default",
                    help="OMP_WAIT_POLICY for every server (default: unset, as peerllm node)")
    ap.add_argument("--quick", action="store_true",
                    help="a check that everything works: 1 minute, readings every 3 s")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    ap.add_argument("--keep-logs", action="store_true", help="keep the nodes' logs")
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes, args.sample_s = 1.0, 3.0
    if not 0 < args.minutes <= MAX_MINUTES:
        ap.error(f"--minutes must be in (0, {MAX_MINUTES:.0f}]")
    if args.clients < 1 or args.sample_s <= 0:
        ap.error("--clients must be >= 1 and --sample-s > 0")
    args.max_tokens = MAX_TOKENS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_omp_wait_policy(args.omp_wait_policy)
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="peerllm-soak-"))
    slug = timestamp_slug()
    ok = False
    try:
        with managed_processes() as group:
            nodes = start_mesh(group, args, work)
            print(f"mesh ready: {', '.join(n.name for n in nodes)}; {args.clients} clients "
                  f"for {args.minutes:g} min", file=sys.stderr)
            measured = run_load(nodes, args)
            setup = {n.name: {"url": n.url, "peer_id": n.info["node"]["peer_id"],
                              "slots": (n.info.get("load") or {}).get("capacity")}
                     for n in nodes}
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
        "benchmark": "soak", "machine": machine, "load_average_at_end": list(os.getloadavg()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": dict(OMP_ENV), "nodes": setup,
        "logs_dir": str(work) if args.keep_logs else None, **measured}
    doc["summary"], doc["targets"] = summarize(doc)
    path = write_results(args.out, "soak", doc, slug)
    print_report(doc)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
