#!/usr/bin/env python3
"""Discovery benchmark: N `peerllm node` processes in a chain on 127.0.0.1.

Node K>0 bootstraps to node K-1, so most nodes can only find each other through the
DHT. Per run it measures start-to-ready, mesh formation, how fast a new node becomes
visible to its bootstrap peer, DHT find-by-name / find-providers latency, node-info
RPC latency on an open stream, and idle RSS. See scripts/bench/README.md.

    python scripts/bench/discovery.py --nodes 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_RESULTS_DIR,
    TERM_GRACE_S,
    Child,
    ProcessGroup,
    clean_env,
    cpu_seconds,
    fmt,
    free_ports,
    machine_info,
    managed_processes,
    median,
    now,
    rnd,
    rss_mb,
    summarize,
    table,
    timestamp_slug,
    verdict,
    write_results,
)

BENCH_DIR = Path(__file__).resolve().parent
READY_TIMEOUT_S = 30.0
MESH_TIMEOUT_S = 120.0
MESH_POLL_S = 0.2
NEW_NODE_TIMEOUT_S = 30.0
NEW_NODE_POLL_S = 0.05
SETTLE_S = 5.0
PROVIDER_NODES = 3
HTTP_TIMEOUT_S = 2.0
PROBE_QUIET_AFTER_S = 32.0
"""The probe measures DHT and steady RPC only after this long (node.py polls the DHT
every second for a node's first 30 s, then every 30 s)."""

# Targets (all compared against the median across runs).
TARGET_RPC_P50_MS = 2.0
TARGET_NEW_VISIBLE_S = 1.0
TARGET_FIND_NAME_P50_MS = 100.0
TARGET_RSS_MB = 100.0
TARGET_START_READY_S = 1.5


# =========================================================================== orchestrator


@dataclass
class BenchNode:
    index: int
    name: str
    data_dir: Path
    log_path: Path
    p2p_port: int
    api_port: int
    serve_default: bool
    bootstrap: str | None = None
    child: Child | None = None
    peer_id: str | None = None
    ready_api_s: float | None = None  # Popen -> GET /v1/node/status answers
    ready_banner_s: float | None = None  # Popen -> "ready" line seen in the log
    ready_at: float | None = None  # absolute (now()) time the API answered

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def addr(self) -> str:
        assert self.peer_id is not None
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"


class BenchError(Exception):
    """A run could not continue (a node did not start, the probe failed, ...)."""


def peerllm_argv() -> list[str]:
    exe = Path(sys.executable).parent / "peerllm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "peerllm"]


def provider_indices(n: int) -> set[int]:
    """Which nodes serve the default model: spread along the chain, away from node 0."""
    want = min(PROVIDER_NODES, n)
    picked: list[int] = []
    for i in (n - 1, (2 * n) // 3, n // 3, *range(n - 1, -1, -1)):
        if 0 <= i < n and i not in picked and (i != 0 or n <= want):
            picked.append(i)
        if len(picked) == want:
            break
    return set(picked)


def get_json(client: httpx.Client, url: str, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    resp = client.get(url, timeout=timeout_s)
    resp.raise_for_status()
    return resp.json()


def start_node(group: ProcessGroup, node: BenchNode) -> None:
    argv = [*peerllm_argv(), "node", "--data-dir", str(node.data_dir), "--name", node.name,
            "--listen", f"/ip4/127.0.0.1/tcp/{node.p2p_port}",
            "--api", f"127.0.0.1:{node.api_port}", "--no-mdns"]
    if not node.serve_default:
        argv.append("--no-default-model")
    if node.bootstrap:
        argv += ["--bootstrap", node.bootstrap]
    node.child = group.spawn(node.name, argv, node.log_path, env=clean_env())


_READY_LINE = re.compile(r"^ready\s*$", re.MULTILINE)


def wait_ready(client: httpx.Client, node: BenchNode, timeout_s: float = READY_TIMEOUT_S
               ) -> None:
    """Poll the API (and the log for the banner) until the node is up; fill in timings."""
    child = node.child
    assert child is not None
    deadline = child.started_at + timeout_s
    banner_deadline: float | None = None
    while True:
        t = now()
        if node.ready_banner_s is None and _READY_LINE.search(child.log_text()):
            node.ready_banner_s = t - child.started_at
        if node.ready_api_s is None:
            try:
                status = get_json(client, f"{node.api}/v1/node/status", timeout_s=1.0)
            except (httpx.HTTPError, ValueError):
                pass
            else:
                node.ready_at = now()
                node.ready_api_s = node.ready_at - child.started_at
                node.peer_id = str(status["peer_id"])
                banner_deadline = node.ready_at + 5.0
        if node.ready_api_s is not None and (node.ready_banner_s is not None
                                             or (banner_deadline and now() > banner_deadline)):
            return
        if not child.alive():
            raise BenchError(f"{node.name} exited with {child.proc.returncode} before it was "
                             f"ready; log tail:\n{child.log_tail()}")
        if now() > deadline:
            raise BenchError(f"{node.name} not ready within {timeout_s} s; log tail:\n"
                             f"{child.log_tail()}")
        time.sleep(0.01)


def healthy_names(client: httpx.Client, node: BenchNode) -> set[str] | None:
    try:
        doc = get_json(client, f"{node.api}/v1/peers")
    except (httpx.HTTPError, ValueError):
        return None
    return {p["name"] for p in doc.get("peers", [])
            if p.get("state") == "healthy" and p.get("name")}


@dataclass
class MeshResult:
    formed_s: float | None  # from the last node being ready until every node saw all others
    per_node_full_s: dict[str, float | None]
    missing: dict[str, list[str]]
    polls: int
    timeline: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


def wait_mesh(client: httpx.Client, nodes: list[BenchNode], t0: float,
              timeout_s: float = MESH_TIMEOUT_S) -> MeshResult:
    """Poll every node's /v1/peers every MESH_POLL_S until each lists all others healthy.

    A node that has seen everyone is no longer polled (less load on a busy machine)
    until all have; then one confirmation round polls all of them, and nodes that lost
    a peer meanwhile go back to being polled.
    """
    names = {n.name for n in nodes}
    first_full: dict[str, float | None] = {n.name: None for n in nodes}
    last_seen: dict[str, set[str]] = {n.name: set() for n in nodes}
    timeline: dict[str, list[tuple[float, int]]] = {n.name: [] for n in nodes}
    polls = 0

    def poll(n: BenchNode) -> bool:
        nonlocal polls
        polls += 1
        seen = healthy_names(client, n)
        t = now() - t0
        if seen is None:
            return False
        seen &= names - {n.name}
        if not timeline[n.name] or timeline[n.name][-1][1] != len(seen):
            timeline[n.name].append((round(t, 3), len(seen)))
        last_seen[n.name] = seen
        full = len(seen) == len(names) - 1
        if full and first_full[n.name] is None:
            first_full[n.name] = t
        elif not full:
            first_full[n.name] = None
        return full

    while now() - t0 < timeout_s:
        round_start = now()
        pending = [n for n in nodes if first_full[n.name] is None]
        if pending:
            for n in pending:
                poll(n)
        else:
            if all(poll(n) for n in nodes):
                done = [v for v in first_full.values() if v is not None]
                return MeshResult(formed_s=max(done), per_node_full_s=first_full, missing={},
                                  polls=polls, timeline=timeline)
        time.sleep(max(0.0, MESH_POLL_S - (now() - round_start)))
    missing = {n.name: sorted(names - {n.name} - last_seen[n.name]) for n in nodes
               if first_full[n.name] is None}
    return MeshResult(formed_s=None, per_node_full_s=first_full, missing=missing, polls=polls,
                      timeline=timeline)


def measure_idle(nodes: list[BenchNode], settle_s: float = SETTLE_S) -> dict[str, Any]:
    """Sleep ``settle_s`` without touching the nodes; then RSS and the CPU they used idling."""
    pids = {n.name: n.child.pid for n in nodes if n.child is not None}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(settle_s)
    rss: dict[str, float | None] = {}
    cpu_pct: dict[str, float | None] = {}
    for name, pid in pids.items():
        c0, c1 = cpu0[name], cpu_seconds(pid)
        cpu_pct[name] = None if c0 is None or c1 is None else rnd((c1 - c0) / settle_s * 100, 1)
        rss[name] = rnd(rss_mb(pid), 1)
    values = [v for v in rss.values() if v is not None]
    return {"rss_mb": rss, "idle_cpu_percent": cpu_pct,
            "rss_mb_median": median(values), "rss_mb_max": max(values) if values else None,
            "idle_cpu_percent_median": median(list(cpu_pct.values()))}


def measure_new_node(client: httpx.Client, group: ProcessGroup, new: BenchNode,
                     boot: BenchNode) -> dict[str, Any]:
    """Start ``new`` (bootstrapping to ``boot``) and time until ``boot`` lists it healthy.

    The new node's API is polled every 10 ms until it answers; ``boot``'s /v1/peers every
    NEW_NODE_POLL_S. The precise moment ``boot`` marked it healthy comes from that
    entry's ``last_seen`` (wall clock of the node-info answer that made it healthy).
    """
    wall0 = time.time()
    start_node(group, new)
    child = new.child
    assert child is not None
    t0 = child.started_at
    visible_at: float | None = None
    healthy_wall: float | None = None
    next_peers_poll = t0
    polls = 0
    while now() - t0 < NEW_NODE_TIMEOUT_S and visible_at is None:
        if new.ready_api_s is None:
            try:
                status = get_json(client, f"{new.api}/v1/node/status", timeout_s=0.5)
            except (httpx.HTTPError, ValueError):
                pass
            else:
                new.ready_at = now()
                new.ready_api_s = new.ready_at - t0
                new.peer_id = str(status["peer_id"])
        if now() >= next_peers_poll:
            next_peers_poll = now() + NEW_NODE_POLL_S
            polls += 1
            try:
                doc = get_json(client, f"{boot.api}/v1/peers")
            except (httpx.HTTPError, ValueError):
                doc = {}
            for p in doc.get("peers", []):
                if p.get("name") == new.name and p.get("state") == "healthy":
                    visible_at = now()
                    healthy_wall = p.get("last_seen")
        if not child.alive():
            raise BenchError(f"{new.name} exited early; log tail:\n{child.log_tail()}")
        time.sleep(0.01)
    if new.ready_api_s is None:  # visible before we caught the API answering (unlikely)
        wait_ready(client, new)
    healthy_s = healthy_wall - wall0 if isinstance(healthy_wall, (int, float)) else None
    return {
        "name": new.name,
        "ready_s": rnd(new.ready_api_s),
        "visible_from_popen_s": rnd(visible_at - t0 if visible_at is not None else None),
        "healthy_from_popen_s": rnd(healthy_s),
        # Precise (boot's own clock) minus poll-detected readiness (≤ 10 ms late): may be
        # slightly negative when boot marked it healthy before we saw its API answer.
        "visible_after_ready_s": rnd(healthy_s - new.ready_api_s
                                     if healthy_s is not None and new.ready_api_s is not None
                                     else None),
        "visible_after_ready_polled_s": rnd(visible_at - new.ready_at
                                            if visible_at is not None
                                            and new.ready_at is not None else None),
        "timed_out": visible_at is None,
        "polls": polls,
        "poll_interval_s": NEW_NODE_POLL_S,
    }


def measure_api_lookups(client: httpx.Client, boot: BenchNode, names: list[str],
                        model: str, passes: int = 2) -> dict[str, Any]:
    """GET /v1/peers/lookup on node 0: names it already holds (registry shortcut), a model."""
    by_name: list[float] = []
    not_found = 0
    for _ in range(passes):
        for name in names:
            t = now()
            resp = client.get(f"{boot.api}/v1/peers/lookup", params={"name": name},
                              timeout=35.0)
            by_name.append((now() - t) * 1000)
            not_found += resp.status_code != 200
    by_model: list[float] = []
    providers: list[int] = []
    for _ in range(5):
        t = now()
        resp = client.get(f"{boot.api}/v1/peers/lookup", params={"model": model}, timeout=35.0)
        by_model.append((now() - t) * 1000)
        providers.append(len(resp.json().get("providers", [])) if resp.status_code == 200
                         else -1)
    return {"name_ms": [rnd(v) for v in by_name], "name_not_found": not_found,
            "name_summary_ms": _rounded(summarize(by_name)),
            "model_ms": [rnd(v) for v in by_model], "model_providers_found": providers}


def run_probe(group: ProcessGroup, run_dir: Path, boot: BenchNode, nodes: list[BenchNode],
              model: str, provider_ids: list[str], rpc_requests: int) -> dict[str, Any]:
    """Run the in-library DHT / RPC probe in its own process; return its results."""
    p2p_port, api_port = free_ports(2)
    cfg = {
        "data_dir": str(run_dir / "probe"),
        "name": "bench-probe",
        "p2p_port": p2p_port,
        "api_port": api_port,
        "bootstrap": boot.addr,
        "rpc_peer": boot.peer_id,
        "rpc_requests": rpc_requests,
        # Farthest from node 0 first; bench-0 is the probe's bootstrap peer.
        "names": {n.name: n.peer_id for n in reversed(nodes)},
        "model": model,
        "provider_peer_ids": provider_ids,
        "cold_repeats": 3,
        "warm_repeats": 5,
        "provider_repeats": 20,
        "quiet_after_s": PROBE_QUIET_AFTER_S,
        "out_path": str(run_dir / "probe-result.json"),
    }
    cfg_path = run_dir / "probe-config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import discovery; "
              "discovery.probe_main(sys.argv[2])")
    child = group.spawn("probe", [sys.executable, "-c", script, str(BENCH_DIR), str(cfg_path)],
                        run_dir / "logs" / "probe.log")
    budget_s = 240.0 + PROBE_QUIET_AFTER_S + rpc_requests * 0.1 + 12 * len(nodes)
    try:
        child.proc.wait(budget_s)
    except Exception as exc:  # TimeoutExpired: stop it, keep whatever it wrote
        group.stop([child])
        raise BenchError(f"probe did not finish within {budget_s:.0f} s; log tail:\n"
                         f"{child.log_tail()}") from exc
    out = Path(str(cfg["out_path"]))
    if not out.exists():
        raise BenchError(f"probe exited {child.proc.returncode} without results; log tail:\n"
                         f"{child.log_tail()}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["exit_code"] = child.proc.returncode
    if not result.get("ok"):
        result["log_tail"] = child.log_tail(40)
    return result


_NORMALIZE = [
    (re.compile(r"^\d\d:\d\d:\d\d "), ""),
    (re.compile(r"(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{20,}"), "<peer>"),
    (re.compile(r"/ip4/[\d.]+/tcp/\d+"), "<addr>"),
    (re.compile(r"\b\d+(\.\d+)?\b"), "<n>"),
]


def scan_logs(children: list[Child]) -> dict[str, Any]:
    """Count WARNING/ERROR/Traceback lines across logs, grouped by their normalized text."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    where: dict[str, set[str]] = {}
    for c in children:
        for line in c.log_text().splitlines():
            if not (" WARNING " in line or " ERROR " in line or line.startswith("Traceback")
                    or " CRITICAL " in line):
                continue
            key = line
            for rx, repl in _NORMALIZE:
                key = rx.sub(repl, key)
            key = key[:200]
            counts[key] += 1
            example.setdefault(key, f"[{c.name}] {line[:400]}")
            where.setdefault(key, set()).add(c.name)
    return {"total": sum(counts.values()),
            "top": [{"count": n, "processes": len(where[k]), "pattern": k, "example": example[k]}
                    for k, n in counts.most_common(15)]}


def _rounded(d: dict[str, Any], digits: int = 3) -> dict[str, Any]:
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in d.items()}


def run_once(args: argparse.Namespace, run_index: int, tmp_root: Path, model: str,
             runs: list[dict[str, Any]]) -> None:
    """One run; its result is appended to ``runs`` first, so an interrupted run is kept."""
    n = args.nodes
    run_dir = tmp_root / f"run-{run_index}"
    providers = provider_indices(n)
    ports = free_ports(2 * (n + 1))
    nodes = [BenchNode(index=k, name=f"bench-{k}", data_dir=run_dir / f"n{k}",
                       log_path=run_dir / "logs" / f"n{k}.log", p2p_port=ports[2 * k],
                       api_port=ports[2 * k + 1], serve_default=k in providers)
             for k in range(n)]
    new = BenchNode(index=n, name=f"bench-{n}", data_dir=run_dir / f"n{n}",
                    log_path=run_dir / "logs" / f"n{n}.log", p2p_port=ports[2 * n],
                    api_port=ports[2 * n + 1], serve_default=False)
    result: dict[str, Any] = {"run": run_index, "nodes": n, "run_dir": str(run_dir),
                              "provider_nodes": sorted(f"bench-{i}" for i in providers),
                              "load_average_at_start": list(_loadavg()), "ok": False}
    runs.append(result)
    print(f"\n== run {run_index}: {n} nodes (providers of {model}: "
          f"{', '.join(result['provider_nodes'])}); logs in {run_dir / 'logs'}", flush=True)
    with managed_processes() as group, httpx.Client() as client:
        try:
            _run_steps(args, group, client, nodes, new, model, result)
            result["ok"] = True
        except BenchError as exc:
            result["error"] = str(exc)
            print(f"   !! run {run_index} failed: {exc}", flush=True)
        except KeyboardInterrupt:
            result["error"] = "interrupted"
            raise
        finally:
            t_stop = now()
            group.stop_all()
            times = [c.exited_at - c.term_sent_at for c in group.children
                     if c.exited_at is not None and c.term_sent_at is not None
                     and c.term_sent_at >= t_stop]
            result["shutdown"] = {
                "total_s": rnd(now() - t_stop),
                "per_process_summary_s": _rounded(summarize(times)),
                "per_process_s": {c.name: rnd(c.exited_at - c.term_sent_at)
                                  for c in group.children
                                  if c.exited_at is not None and c.term_sent_at is not None},
                "sigkilled": [c.name for c in group.children if c.killed],
                "exit_codes": {c.name: c.proc.returncode for c in group.children},
            }
            result["log_scan"] = scan_logs(group.children)


def _loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def _run_steps(args: argparse.Namespace, group: ProcessGroup, client: httpx.Client,
               nodes: list[BenchNode], new: BenchNode, model: str,
               result: dict[str, Any]) -> None:
    # 1. Start the chain one node at a time: node K needs node K-1's peer ID, and a
    #    staggered start keeps start-to-ready about the node, not about 20 imports
    #    fighting over 2 cores.
    first_start: float | None = None
    for node in nodes:
        if node.index > 0:
            node.bootstrap = nodes[node.index - 1].addr
        start_node(group, node)
        assert node.child is not None
        first_start = first_start or node.child.started_at
        wait_ready(client, node)
        print(f"   {node.name} ready in {node.ready_api_s:.2f} s (banner "
              f"{fmt(node.ready_banner_s, ' s')}){' [model]' if node.serve_default else ''}",
              flush=True)
    assert first_start is not None
    ready = [n.ready_api_s for n in nodes if n.ready_api_s is not None]
    banner = [n.ready_banner_s for n in nodes if n.ready_banner_s is not None]
    result["start_to_ready"] = {
        "api_s": {n.name: rnd(n.ready_api_s) for n in nodes},
        "banner_s": {n.name: rnd(n.ready_banner_s) for n in nodes},
        "api_summary_s": _rounded(summarize(ready)),
        "banner_summary_s": _rounded(summarize(banner)),
        "model_nodes_api_s": [rnd(n.ready_api_s) for n in nodes if n.serve_default],
    }

    # 2. Mesh formation, timed from the moment the last node answered.
    last_ready = max(n.ready_at for n in nodes if n.ready_at is not None)
    mesh = wait_mesh(client, nodes, last_ready)
    result["mesh"] = {
        "formed_s": rnd(mesh.formed_s),
        "formed_from_first_start_s": rnd(mesh.formed_s + (last_ready - first_start)
                                         if mesh.formed_s is not None else None),
        "chain_start_span_s": rnd(last_ready - first_start),
        "timed_out": mesh.formed_s is None,
        "timeout_s": MESH_TIMEOUT_S,
        "per_node_full_s": {k: rnd(v) for k, v in mesh.per_node_full_s.items()},
        "missing": mesh.missing,
        "polls": mesh.polls,
        "timeline": mesh.timeline,
    }
    if mesh.formed_s is None:
        print(f"   mesh NOT formed within {MESH_TIMEOUT_S:.0f} s; still missing: "
              f"{ {k: len(v) for k, v in mesh.missing.items()} }", flush=True)
    else:
        print(f"   mesh formed {mesh.formed_s:.2f} s after the last node was ready "
              f"({mesh.formed_s + last_ready - first_start:.1f} s after the first start)",
              flush=True)

    # 3. Idle: RSS and CPU after SETTLE_S of nobody asking anything.
    result["idle"] = measure_idle(nodes)
    print(f"   idle RSS median {fmt(result['idle']['rss_mb_median'], ' MB', 1)}, max "
          f"{fmt(result['idle']['rss_mb_max'], ' MB', 1)}; idle CPU median "
          f"{fmt(result['idle']['idle_cpu_percent_median'], ' %', 1)}", flush=True)

    # 4. One new node bootstrapping to node 0.
    new.bootstrap = nodes[0].addr
    result["new_node"] = measure_new_node(client, group, new, nodes[0])
    nn = result["new_node"]
    print(f"   new node ready {fmt(nn['ready_s'], ' s')}, visible to bench-0 "
          f"{fmt(nn['visible_after_ready_s'], ' s')} after ready "
          f"({fmt(nn['visible_from_popen_s'], ' s')} after Popen)", flush=True)

    # 5. The HTTP lookup route on node 0 (answers from its registry for known names).
    result["api_lookup"] = measure_api_lookups(client, nodes[0], [n.name for n in nodes[1:]],
                                               model)

    # 6. DHT + RPC from a probe process using the library directly.
    provider_ids = [n.peer_id for n in nodes if n.serve_default and n.peer_id]
    print("   probe: DHT lookups and node-info RPC ...", flush=True)
    result["probe"] = run_probe(group, Path(result["run_dir"]), nodes[0], nodes, model,
                                provider_ids, args.rpc_requests)
    pr = result["probe"]
    if not pr.get("ok"):
        raise BenchError(f"probe failed: {pr.get('error')}\n{pr.get('log_tail', '')}")
    print(f"   probe: find_name first p50 {fmt(pr['find_name_first']['summary_ms']['p50'])} "
          f"ms, node-info RPC p50 {fmt(pr['rpc']['summary_ms']['p50'])} ms", flush=True)

    # 7. Idle again, now that every node is past node.py's 30 s fast DHT polling.
    result["idle_end"] = measure_idle([*nodes, new])
    result["idle_end"]["min_node_age_s"] = rnd(now() - max(
        n.child.started_at for n in [*nodes, new] if n.child is not None), 1)
    print(f"   idle again: RSS max {fmt(result['idle_end']['rss_mb_max'], ' MB', 1)}, "
          f"CPU median {fmt(result['idle_end']['idle_cpu_percent_median'], ' %', 1)}",
          flush=True)

    # 8. SIGTERM to one node alone (the new one) in the idle mesh: how long to exit?
    if new.child is not None:
        group.stop([new.child])
        c = new.child
        result["single_shutdown"] = {
            "name": new.name, "exit_code": c.proc.returncode, "sigkilled": c.killed,
            "seconds": rnd(c.exited_at - c.term_sent_at
                           if c.exited_at is not None and c.term_sent_at is not None else None)}


# =========================================================================== probe process


def probe_main(cfg_path: str) -> None:
    """Entry point of the probe process (started with ``python -c`` by run_probe)."""
    import trio

    cfg: dict[str, Any] = json.loads(Path(cfg_path).read_text())
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out: dict[str, Any] = {"ok": False}
    try:
        trio.run(_probe, cfg, out)
        out["ok"] = "error" not in out
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        logging.getLogger("probe").exception("probe failed")
        raise
    finally:
        Path(cfg["out_path"]).write_text(json.dumps(out, indent=1))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


async def _rpc_bench(node: Any, peer: str, requests: int) -> dict[str, Any]:
    """``requests`` sequential node-info calls on one open stream (the opening call excluded)."""
    await node.membership.info_client.fetch(peer)  # opens (or reuses) the stream; not counted
    wall: list[float] = []
    rtt: list[float] = []
    errors = 0
    for _ in range(requests):
        t0 = time.perf_counter()
        try:
            _info, rtt_ms = await node.membership.info_client.fetch(peer)
        except Exception:
            errors += 1
            continue
        wall.append(_ms(t0))
        rtt.append(round(rtt_ms, 3))
    return {"peer": peer, "samples_ms": wall, "rtt_ms": rtt, "errors": errors,
            "summary_ms": _rounded(summarize(wall)), "rtt_summary_ms": _rounded(summarize(rtt))}


async def _probe(cfg: dict[str, Any], out: dict[str, Any]) -> None:
    import trio

    from peerllm import NodeConfig, open_node
    from peerllm.config import (
        ApiConfig,
        DiscoveryConfig,
        ModelsConfig,
        NodeIdentityConfig,
        P2PConfig,
    )
    from peerllm.wire.records import name_record_key

    log = logging.getLogger("probe")
    node_cfg = NodeConfig(
        data_dir=Path(cfg["data_dir"]),
        node=NodeIdentityConfig(name=cfg["name"]),
        p2p=P2PConfig(listen=(f"/ip4/127.0.0.1/tcp/{cfg['p2p_port']}",),
                      bootstrap=(cfg["bootstrap"],)),
        discovery=DiscoveryConfig(mdns=False, dht=True),
        api=ApiConfig(host="127.0.0.1", port=cfg["api_port"]),
        models=ModelsConfig(serve_default=False),
    )
    names: dict[str, str] = cfg["names"]
    t_open = time.perf_counter()
    async with open_node(node_cfg) as node:
        out["open_ms"] = _ms(t_open)
        dht = node.membership.dht
        assert dht is not None
        kad = dht.kad

        # Routing table: first peer, then wait until it stops growing (3 s, cap 30 s).
        with trio.move_on_after(30):
            while not dht.routing_peers():
                await trio.sleep(0.02)
        out["routing_first_peer_ms"] = _ms(t_open)
        if not dht.routing_peers():
            out["error"] = "routing table still empty after 30 s"
            return
        size, stable_since = len(dht.routing_peers()), trio.current_time()
        with trio.move_on_after(30):
            while trio.current_time() - stable_since < 3.0:
                await trio.sleep(0.1)
                cur = len(dht.routing_peers())
                if cur != size:
                    size, stable_since = cur, trio.current_time()
        out["routing_table_size"] = len(dht.routing_peers())
        out["routing_settled_ms"] = _ms(t_open)
        out["connected_peers"] = len(node.host.connected_peers())
        log.info("routing table: %d peers, %d connected", out["routing_table_size"],
                 out["connected_peers"])

        # node-info RPC on the open stream to the bootstrap peer, while this node is
        # fresh (its DHT maintenance polls every second for its first 30 s).
        out["rpc_fresh"] = await _rpc_bench(node, cfg["rpc_peer"], int(cfg["rpc_requests"]))
        out["rpc_fresh"]["at_s"] = round(time.perf_counter() - t_open, 1)

        # Then let it settle, so the rest measures a node in its steady state.
        quiet_at = t_open + float(cfg["quiet_after_s"])
        if time.perf_counter() < quiet_at:
            await trio.sleep(quiet_at - time.perf_counter())
        out["routing_table_size_steady"] = len(dht.routing_peers())

        # find_name, first read of each name (goes to the network), then find_node.
        first: list[dict[str, Any]] = []
        for name, expect in names.items():
            t0 = time.perf_counter()
            claim = await dht.find_name(name)
            ms = _ms(t0)
            row: dict[str, Any] = {"name": name, "ms": ms, "found": claim is not None,
                                   "correct": claim is not None and claim.peer_id == expect}
            if claim is not None:
                t1 = time.perf_counter()
                rec = await dht.find_node(claim.peer_id)
                row["find_node_ms"] = _ms(t1)
                row["node_record_found"] = rec is not None
            first.append(row)
        ok = [r["ms"] for r in first if r["found"]]
        out["find_name_first"] = {
            "samples": first, "summary_ms": _rounded(summarize(ok)),
            "found": len(ok), "asked": len(first),
            "correct": sum(1 for r in first if r["correct"]),
            "resolve_summary_ms": _rounded(summarize(
                [r["ms"] + r["find_node_ms"] for r in first if "find_node_ms" in r])),
        }
        log.info("find_name first p50 %s ms (%d/%d found)",
                 out["find_name_first"]["summary_ms"]["p50"], len(ok), len(first))

        # Cold re-reads: drop the locally cached record first, so each read is a DHT walk.
        cold: list[float] = []
        cold_missing = 0
        for _ in range(int(cfg["cold_repeats"])):
            for name in names:
                kad.value_store.store.pop(name_record_key(name).encode(), None)
                t0 = time.perf_counter()
                claim = await dht.find_name(name)
                if claim is None:
                    cold_missing += 1
                else:
                    cold.append(_ms(t0))
        out["find_name_cold"] = {"samples_ms": cold, "missing": cold_missing,
                                 "summary_ms": _rounded(summarize(cold))}

        # Where a cold read spends its time: the FIND_NODE walk alone, per name.
        walk: list[float] = []
        for name in names:
            t0 = time.perf_counter()
            await kad.peer_routing.find_closest_peers_network(name_record_key(name).encode())
            walk.append(_ms(t0))
        out["closest_peers_walk"] = {"samples_ms": walk, "summary_ms": _rounded(summarize(walk))}

        # Warm reads: the local value store answers (what get_value does after a read).
        warm: list[float] = []
        for _ in range(int(cfg["warm_repeats"])):
            for name in names:
                t0 = time.perf_counter()
                await dht.find_name(name)
                warm.append(_ms(t0))
        out["find_name_warm"] = {"samples_ms": warm, "summary_ms": _rounded(summarize(warm))}

        # find_providers for the bundled model: first read, cold (cache cleared), warm.
        model = cfg["model"]
        expected = set(cfg["provider_peer_ids"])
        t0 = time.perf_counter()
        found = await dht.find_providers(model)
        first_ms = _ms(t0)
        prov_first = {"ms": first_ms, "providers": len(found),
                      "unique_providers": len({p for p, _ in found}),
                      "expected_found": len(expected & {p for p, _ in found})}
        pcold: list[float] = []
        pcold_found: list[int] = []
        pcold_returned: list[int] = []
        for _ in range(int(cfg["provider_repeats"])):
            kad.provider_store.providers.clear()
            t0 = time.perf_counter()
            got = await dht.find_providers(model)
            pcold.append(_ms(t0))
            pcold_found.append(len(expected & {p for p, _ in got}))
            pcold_returned.append(len(got))
        pwarm: list[float] = []
        for _ in range(int(cfg["provider_repeats"])):
            t0 = time.perf_counter()
            await dht.find_providers(model)
            pwarm.append(_ms(t0))
        out["find_providers"] = {
            "model": model, "expected": len(expected), "first": prov_first,
            "cold_samples_ms": pcold, "cold_expected_found": pcold_found,
            "cold_returned_entries": pcold_returned,
            "cold_summary_ms": _rounded(summarize(pcold)),
            "warm_summary_ms": _rounded(summarize(pwarm)),
        }
        log.info("find_providers first %.1f ms (%d providers), cold p50 %s ms", first_ms,
                 len(found), out["find_providers"]["cold_summary_ms"]["p50"])

        # What one routing-table refresh costs (node.py runs one every second for a
        # node's first 30 s, then every 30 s): wall time and this process's CPU time.
        refresh_wall: list[float] = []
        refresh_cpu: list[float] = []
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            await dht.refresh()
            refresh_wall.append(_ms(t0))
            refresh_cpu.append(round((time.process_time() - c0) * 1000, 3))
        out["dht_refresh"] = {"wall_ms": refresh_wall, "cpu_ms": refresh_cpu}

        out["rpc"] = await _rpc_bench(node, cfg["rpc_peer"], int(cfg["rpc_requests"]))
        out["rpc"]["at_s"] = round(time.perf_counter() - t_open, 1)
        log.info("rpc p50 %s ms (fresh %s ms)", out["rpc"]["summary_ms"]["p50"],
                 out["rpc_fresh"]["summary_ms"]["p50"])


# =========================================================================== summary


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if isinstance(d, list) and key.isdigit() and int(key) < len(d):
            d = d[int(key)]
        elif isinstance(d, dict) and key in d:
            d = d[key]
        else:
            return None
    return d


# (label, unit, digits, path into a run result, upper limit or None)
METRICS: list[tuple[str, str, int, tuple[str, ...], float | None]] = [
    ("node-info RPC p50 (open stream)", " ms", 2, ("probe", "rpc", "summary_ms", "p50"),
     TARGET_RPC_P50_MS),
    ("new node visible to bootstrap peer (after its API is up)", " s", 2,
     ("new_node", "visible_after_ready_s"), TARGET_NEW_VISIBLE_S),
    ("find-by-name via DHT p50 (first read)", " ms", 1,
     ("probe", "find_name_first", "summary_ms", "p50"), TARGET_FIND_NAME_P50_MS),
    ("idle RSS per node, max", " MB", 1, ("idle", "rss_mb_max"), TARGET_RSS_MB),
    ("start-to-ready, median over nodes", " s", 2,
     ("start_to_ready", "api_summary_s", "p50"), TARGET_START_READY_S),
]

INFO_METRICS: list[tuple[str, str, int, tuple[str, ...]]] = [
    ("node-info RPC p99", " ms", 2, ("probe", "rpc", "summary_ms", "p99")),
    ("node-info RPC p50, client-reported rtt", " ms", 2, ("probe", "rpc", "rtt_summary_ms", "p50")),
    ("node-info RPC p50, probe in its first 30 s", " ms", 2,
     ("probe", "rpc_fresh", "summary_ms", "p50")),
    ("node-info RPC p99, probe in its first 30 s", " ms", 2,
     ("probe", "rpc_fresh", "summary_ms", "p99")),
    ("new node healthy at bootstrap peer, from Popen", " s", 2,
     ("new_node", "healthy_from_popen_s")),
    ("new node visible, polled, after its API is up", " s", 2,
     ("new_node", "visible_after_ready_polled_s")),
    ("new node start-to-ready", " s", 2, ("new_node", "ready_s")),
    ("mesh formed (all see all healthy), after last ready", " s", 2, ("mesh", "formed_s")),
    ("mesh formed, after first node started", " s", 1, ("mesh", "formed_from_first_start_s")),
    ("start-to-ready p95 over nodes", " s", 2, ("start_to_ready", "api_summary_s", "p95")),
    ("start-to-ready max over nodes", " s", 2, ("start_to_ready", "api_summary_s", "max")),
    ("start-to-\"ready\" banner, median", " s", 2, ("start_to_ready", "banner_summary_s", "p50")),
    ("find-by-name DHT p95 (first read)", " ms", 1,
     ("probe", "find_name_first", "summary_ms", "p95")),
    ("find-by-name DHT found/asked (first read)", "", 0, ("probe", "find_name_first", "found")),
    ("name+node record resolve p50 (first read)", " ms", 1,
     ("probe", "find_name_first", "resolve_summary_ms", "p50")),
    ("find-by-name DHT p50 (cold: cache cleared)", " ms", 1,
     ("probe", "find_name_cold", "summary_ms", "p50")),
    ("find-by-name DHT p95 (cold: cache cleared)", " ms", 1,
     ("probe", "find_name_cold", "summary_ms", "p95")),
    ("  of which FIND_NODE walk alone, p50", " ms", 1,
     ("probe", "closest_peers_walk", "summary_ms", "p50")),
    ("find-by-name p50 (repeat: local cache)", " ms", 3,
     ("probe", "find_name_warm", "summary_ms", "p50")),
    ("find-providers first read", " ms", 1, ("probe", "find_providers", "first", "ms")),
    ("find-providers first read: entries returned", "", 0,
     ("probe", "find_providers", "first", "providers")),
    ("find-providers first read: distinct providers", "", 0,
     ("probe", "find_providers", "first", "unique_providers")),
    ("find-providers p50 (cold: cache cleared)", " ms", 1,
     ("probe", "find_providers", "cold_summary_ms", "p50")),
    ("find-providers p95 (cold: cache cleared)", " ms", 1,
     ("probe", "find_providers", "cold_summary_ms", "p95")),
    ("find-providers p50 (repeat: local cache)", " ms", 3,
     ("probe", "find_providers", "warm_summary_ms", "p50")),
    ("API /v1/peers/lookup?name p50 (registry hit)", " ms", 1,
     ("api_lookup", "name_summary_ms", "p50")),
    ("idle RSS per node, median", " MB", 1, ("idle", "rss_mb_median")),
    ("idle CPU per node, median", " %", 1, ("idle", "idle_cpu_percent_median")),
    ("idle RSS per node at the end, max", " MB", 1, ("idle_end", "rss_mb_max")),
    ("idle CPU per node at the end (all ≥ 30 s old), median", " %", 1,
     ("idle_end", "idle_cpu_percent_median")),
    ("probe routing-table size", "", 0, ("probe", "routing_table_size")),
    ("one DHT routing-table refresh: wall (first of 3)", " ms", 0,
     ("probe", "dht_refresh", "wall_ms", "0")),
    ("one DHT routing-table refresh: CPU (first of 3)", " ms", 0,
     ("probe", "dht_refresh", "cpu_ms", "0")),
    ("shutdown of one node in the idle mesh (SIGTERM -> exit)", " s", 2,
     ("single_shutdown", "seconds")),
    ("shutdown, all at once: SIGTERM -> exit, median", " s", 2,
     ("shutdown", "per_process_summary_s", "p50")),
    ("shutdown, all at once: slowest (5 s = SIGKILLed)", " s", 2,
     ("shutdown", "per_process_summary_s", "max")),
]


def build_summary(runs: list[dict[str, Any]], nodes: int) -> dict[str, Any]:
    targets = []
    for label, _unit, _d, path, limit in METRICS:
        per_run = [_get(r, *path) for r in runs]
        med = median(per_run)
        targets.append({"metric": label, "path": ".".join(path), "target": limit,
                        "per_run": per_run, "median": rnd(med, 3),
                        "verdict": verdict(med, limit) if limit is not None else None})
    info = []
    for label, _unit, _d, path in INFO_METRICS:
        per_run = [_get(r, *path) for r in runs]
        info.append({"metric": label, "path": ".".join(path), "per_run": per_run,
                     "median": rnd(median(per_run), 3)})
    return {"nodes": nodes, "runs_ok": sum(1 for r in runs if r.get("ok")),
            "runs": len(runs), "targets": targets, "info": info,
            "find_name_target_applies": nodes >= 20}


def print_summary(summary: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    nruns = len(runs)
    header = ["metric", "target", *[f"run {r['run']}" for r in runs], "median", "verdict"]
    rows = []
    for spec, t in zip(METRICS, summary["targets"], strict=True):
        _label, unit, digits, _path, limit = spec
        verdict_text = t["verdict"] or ""
        if "find-by-name" in t["metric"] and not summary["find_name_target_applies"]:
            verdict_text += f" (target is for 20 nodes; ran {summary['nodes']})"
        rows.append([t["metric"], f"≤ {limit:g}{unit}" if limit is not None else "",
                     *[fmt(v, unit, digits) for v in t["per_run"]],
                     fmt(t["median"], unit, digits), verdict_text])
    print(f"\nPeerLLM discovery benchmark: {summary['nodes']} nodes, {nruns} run(s), "
          f"{summary['runs_ok']} complete")
    print(table(rows, header))
    header2 = ["other measurements", *[f"run {r['run']}" for r in runs], "median"]
    rows2 = []
    for info_spec, t in zip(INFO_METRICS, summary["info"], strict=True):
        _label, unit, digits, _path = info_spec
        rows2.append([t["metric"], *[fmt(v, unit, digits) if not isinstance(v, int) or unit
                                     else str(v) for v in t["per_run"]],
                      fmt(t["median"], unit, digits)])
    print()
    print(table(rows2, header2))
    for r in runs:
        if r.get("error"):
            first_line = str(r["error"]).splitlines()[0]
            print(f"\nrun {r['run']} FAILED: {first_line}")
        if _get(r, "mesh", "timed_out"):
            print(f"run {r['run']}: mesh did not form within {MESH_TIMEOUT_S:.0f} s; missing "
                  f"{ {k: len(v) for k, v in r['mesh']['missing'].items()} }")
        killed = _get(r, "shutdown", "sigkilled")
        if killed:
            print(f"run {r['run']}: {len(killed)} process(es) ignored SIGTERM for "
                  f"{TERM_GRACE_S:g} s and were SIGKILLed: {', '.join(killed)}")
        scan = r.get("log_scan") or {}
        if scan.get("total"):
            print(f"run {r['run']}: {scan['total']} warning/error log lines; most common:")
            for item in scan["top"][:5]:
                print(f"   {item['count']:5d}× in {item['processes']} proc: "
                      f"{item['example'][:160]}")


# =========================================================================== main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=20, help="nodes in the chain (default 20)")
    p.add_argument("--runs", type=int, default=3, help="independent runs (default 3)")
    p.add_argument("--rpc-requests", type=int, default=1000,
                   help="sequential node-info requests per run (default 1000)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR,
                   help="directory for the JSON results (default scripts/bench/results/)")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the temporary directory with data dirs and node logs")
    args = p.parse_args(argv)
    if args.nodes < 2:
        p.error("--nodes must be at least 2")
    if args.runs < 1 or args.rpc_requests < 1:
        p.error("--runs and --rpc-requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    slug = timestamp_slug()
    from peerllm.inference.catalog import DEFAULT_MODEL_ID

    tmp_root = Path(tempfile.mkdtemp(prefix="peerllm-bench-discovery-"))
    print(f"discovery benchmark: {args.nodes} nodes × {args.runs} run(s); "
          f"{machine['nproc']} CPUs, load {machine['load_average_at_start']}; tmp {tmp_root}",
          flush=True)
    runs: list[dict[str, Any]] = []
    interrupted = False
    try:
        for i in range(1, args.runs + 1):
            run_once(args, i, tmp_root, DEFAULT_MODEL_ID, runs)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; every node has been stopped", flush=True)
    summary = build_summary(runs, args.nodes)
    doc = {
        "benchmark": "discovery",
        "args": {"nodes": args.nodes, "runs": args.runs, "rpc_requests": args.rpc_requests},
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in _loadavg()],
        "interrupted": interrupted,
        "model": DEFAULT_MODEL_ID,
        "settings": {"mesh_timeout_s": MESH_TIMEOUT_S, "mesh_poll_s": MESH_POLL_S,
                     "new_node_poll_s": NEW_NODE_POLL_S, "settle_s": SETTLE_S,
                     "ready_timeout_s": READY_TIMEOUT_S},
        "summary": summary,
        "runs": runs,
    }
    failed = interrupted or any(not r.get("ok") for r in runs)
    keep = args.keep_logs or failed
    doc["logs_dir"] = str(tmp_root) if keep else None
    if runs:
        print_summary(summary, runs)
    path = write_results(args.out, "discovery", doc, slug)
    print(f"\nresults: {path}")
    if keep:
        print(f"logs and data dirs kept in {tmp_root}")
    else:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
