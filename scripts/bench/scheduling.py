"""Discrete-event simulation of request placement, driving the real scheduling code.

A heterogeneous cluster (default 20 nodes: mixed speed, slots, memory and RTT) receives
Poisson arrivals from several independent client nodes. Each client ranks candidates with
peerllm.scheduling (MCDA or a baseline strategy, circuit breakers) from its own view of the
cluster: node-info refreshed periodically (so views are stale, as in the real mesh), the
load a node reports when it accepts a request and a refresh after each request (as the
router does), plus its own in-flight counts. Failures are injected: nodes die, one slows
down, one flaps. An oracle that knows true queues and speeds is the yardstick. Requests on
a node that dies resume elsewhere (as the router does), so "failed" counts requests that
found no node within their deadline.

    python scripts/bench/scheduling.py            # JSON + PNG in scripts/bench/results/,
                                                  # table in docs/scheduling.md
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peerllm.scheduling.breaker import Breaker, BreakerConfig, allows, on_failure, on_success
from peerllm.scheduling.candidates import Candidate
from peerllm.scheduling.mcda import Weights, rank_by

DEADLINE_S = 60.0  # a request not answered by then counts as failed
STRATEGIES = ("mcda", "round_robin", "weighted_round_robin", "least_connections", "latency",
              "random", "oracle")

# Ablations, shown below the strategies: MCDA without the load in `accepted` (views only
# from node-info), and MCDA with the load criterion weighted up.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mcda, no accepted-load": ("mcda", {"piggyback": False}),
    "mcda, weights .1/.7/.1/.1": ("mcda", {"weights": Weights(free_memory=0.1, load=0.7,
                                                               latency=0.1, throughput=0.1)}),
}


@dataclass
class Node:
    nid: str
    speed: float  # tokens/s per slot
    slots: int
    rtt_ms: float
    free_mem: int
    alive: bool = True
    slow_factor: float = 1.0
    running: int = 0
    queue: list[int] = field(default_factory=list)  # request ids
    served: int = 0


@dataclass
class Req:
    rid: int
    client: int
    tokens: int
    arrived: float
    remaining: int
    attempts: int = 0
    node: str | None = None
    done_at: float | None = None
    failed: bool = False
    gen: int = 0  # bumps when the request moves; stale completion events are ignored


def build_cluster(n: int, rng: random.Random) -> dict[str, Node]:
    nodes = {}
    for i in range(n):
        tier = rng.choice(["small", "mid", "big"])
        speed = {"small": rng.uniform(8, 20), "mid": rng.uniform(25, 45),
                 "big": rng.uniform(60, 110)}[tier]
        slots = {"small": 1, "mid": 2, "big": rng.choice([3, 4])}[tier]
        mem = {"small": rng.randint(2, 6), "mid": rng.randint(8, 16),
               "big": rng.randint(20, 48)}[tier] << 30
        nodes[f"n{i:02d}"] = Node(f"n{i:02d}", speed, slots, rng.uniform(1, 40), mem)
    return nodes


def simulate(strategy: str, *, seed: int, n_nodes: int, n_clients: int, duration: float,
             load: float, refresh_s: float, piggyback: bool = True,
             weights: Weights | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes = build_cluster(n_nodes, random.Random(seed))
    ids = sorted(nodes)
    mean_tokens = 160.0
    capacity_rps = sum(nd.speed * nd.slots for nd in nodes.values()) / mean_tokens
    lam = load * capacity_rps
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, data: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, data))

    reqs: dict[int, Req] = {}
    views: list[dict[str, tuple[int, int, float, bool]]] = [{} for _ in range(n_clients)]
    inflight: list[dict[str, int]] = [{k: 0 for k in ids} for _ in range(n_clients)]
    breakers: list[dict[str, Breaker]] = [{} for _ in range(n_clients)]
    counters = [0] * n_clients
    bcfg = BreakerConfig()
    weights = weights or Weights()
    # Failure script: two nodes die at 40% of the run, one slows 5x at 55%, one flaps.
    victims = rng.sample(ids, 4)
    push(duration * 0.40, "die", victims[0])
    push(duration * 0.42, "die", victims[1])
    push(duration * 0.55, "slow", victims[2])
    for k in range(int(duration // 20)):
        push(10.0 + 20.0 * k, "die", victims[3])
        push(20.0 + 20.0 * k, "revive", victims[3])
    for c in range(n_clients):
        push(rng.uniform(0, refresh_s), "refresh", c)
    t, rid = 0.0, 0
    while True:
        t += rng.expovariate(lam)
        if t >= duration:
            break
        rid += 1
        tok = max(16, int(rng.gauss(mean_tokens, 60)))
        reqs[rid] = Req(rid, rng.randrange(n_clients), tok, t, tok)
        push(t, "arrive", rid)

    def observe(nd: Node) -> tuple[int, int, float, bool]:
        return (nd.running, len(nd.queue), nd.speed / nd.slow_factor, True)

    def start_next(nd: Node, now: float) -> None:
        while nd.alive and nd.running < nd.slots and nd.queue:
            r = reqs[nd.queue.pop(0)]
            if now - r.arrived > DEADLINE_S:  # its client gave up while it queued
                r.failed = True
                inflight[r.client][nd.nid] -= 1
                continue
            nd.running += 1
            service = r.remaining / (nd.speed / nd.slow_factor)
            push(now + service + nd.rtt_ms / 1000, "finish", (r.rid, r.gen, nd.nid))

    def candidates(c: int) -> list[Candidate]:
        out = []
        for nid in ids:
            view = views[c].get(nid)
            if view is None or not allows(breakers[c].get(nid, Breaker()), now, bcfg):
                continue
            running, queued, speed, _ = view
            nd = nodes[nid]
            out.append(Candidate(peer_id=nid, name=nid, local=False, loaded=True,
                                 active=running, queued=queued, capacity=nd.slots,
                                 rtt_ms=nd.rtt_ms, in_flight=inflight[c][nid],
                                 tokens_per_second=speed, free_memory_bytes=nd.free_mem,
                                 degraded=queued > nd.slots))
        return out

    def oracle_pick() -> list[str]:
        def eta(nd: Node) -> float:
            waiting = max(0, nd.running + len(nd.queue) - nd.slots + 1)
            return (waiting * mean_tokens / nd.speed * nd.slow_factor / nd.slots
                    + mean_tokens / (nd.speed / nd.slow_factor) + nd.rtt_ms / 1000)
        return [nd.nid for nd in sorted((nodes[i] for i in ids if nodes[i].alive), key=eta)]

    def dispatch(r: Req, now: float) -> None:
        c = r.client
        if now - r.arrived > DEADLINE_S or r.attempts >= 8:
            r.failed = True
            return
        r.attempts += 1
        if strategy == "oracle":
            order = oracle_pick()
        else:
            cands = candidates(c)
            counters[c] += 1
            ranked, _ = rank_by(strategy, cands, weights=weights, rng=rng,
                                counter=counters[c], tie_epsilon=0.05)
            order = [x.peer_id for x in ranked]
        if not order:
            push(now + 0.5, "retry", r.rid)
            return
        nid = order[0]
        nd = nodes[nid]
        r.node, r.gen = nid, r.gen + 1
        inflight[c][nid] += 1
        if not nd.alive:
            # Dial to a dead node fails after a connect timeout; then the next candidate.
            push(now + nd.rtt_ms / 1000 + 1.0, "dialfail", (r.rid, r.gen, nid))
            return
        nd.queue.append(r.rid)
        start_next(nd, now)
        if piggyback:  # the node's `accepted` frame carries its load (protocols/inference.md)
            views[c][nid] = observe(nd)

    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind in ("arrive", "retry"):
            dispatch(reqs[data], now)
        elif kind == "dialfail":
            r_id, gen, nid = data
            r = reqs[r_id]
            if gen != r.gen:
                continue
            inflight[r.client][nid] -= 1
            breakers[r.client][nid] = on_failure(breakers[r.client].get(nid, Breaker()), now,
                                                 bcfg)
            dispatch(r, now)
        elif kind == "finish":
            r_id, gen, nid = data
            r = reqs[r_id]
            nd = nodes[nid]
            if gen != r.gen or not nd.alive:
                continue
            nd.running -= 1
            nd.served += 1
            inflight[r.client][nid] -= 1
            breakers[r.client][nid] = on_success(breakers[r.client].get(nid, Breaker()), now,
                                                 bcfg)
            if piggyback:  # the router refreshes a peer's node-info after each request
                views[r.client][nid] = observe(nd)
            if now - r.arrived > DEADLINE_S:
                r.failed = True  # finished, but after the client's deadline
            else:
                r.done_at = now
            start_next(nd, now)
        elif kind == "refresh":
            c = data
            views[c] = {nid: observe(nd) for nid, nd in nodes.items() if nd.alive}
            if now < duration + 120:  # the tail drains within the 60 s request deadline
                push(now + refresh_s, "refresh", c)
        elif kind in ("die", "revive", "slow"):
            nd = nodes[data]
            if kind == "slow":
                nd.slow_factor = 5.0
            elif kind == "revive":
                nd.alive = True
            elif nd.alive:
                nd.alive = False
                # Streams in flight break; the router resumes them elsewhere (a fresh
                # dispatch of the remaining tokens, after detection).
                moved = [i for i in nd.queue] + [r.rid for r in reqs.values()
                                                  if r.node == nd.nid and r.done_at is None
                                                  and not r.failed and r.rid not in nd.queue]
                nd.queue.clear()
                nd.running = 0
                for r_id in moved:
                    r = reqs[r_id]
                    if r.arrived > now:
                        continue
                    inflight[r.client][nd.nid] -= 1
                    breakers[r.client][nd.nid] = on_failure(
                        breakers[r.client].get(nd.nid, Breaker()), now, bcfg)
                    r.remaining = max(1, r.remaining // 2)  # about half was produced already
                    r.gen += 1
                    push(now + 0.05, "retry", r_id)
    done = [r for r in reqs.values() if r.done_at is not None]
    lat = sorted(r.done_at - r.arrived for r in done)  # type: ignore[operator]
    failed = sum(1 for r in reqs.values() if r.done_at is None)
    in_window = sum(1 for r in done if r.done_at is not None and r.done_at <= duration)
    shares = [nodes[i].served / max(1, sum(n.served for n in nodes.values())) for i in ids]
    util = [nodes[i].served * mean_tokens / (nodes[i].speed * nodes[i].slots) for i in ids]

    def pct(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else None

    return {"strategy": strategy, "requests": len(reqs), "completed": len(done),
            "failed": failed, "p50_s": pct(50), "p95_s": pct(95),
            "throughput_rps": in_window / duration, "max_node_share": max(shares),
            "util_cv": statistics.pstdev(util) / (statistics.mean(util) or 1),
            "offered_rps": lam}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--duration", type=float, default=300.0, help="simulated seconds")
    ap.add_argument("--load", type=float, default=0.7, help="offered load / cluster capacity")
    ap.add_argument("--refresh", type=float, default=5.0,
                    help="node-info refresh period (s); 5 s is the node's heartbeat")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--docs", type=Path, default=Path(__file__).parents[2] / "docs")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in (*STRATEGIES, *VARIANTS)}
    for seed in range(args.seeds):
        for s in rows:
            strategy, extra = VARIANTS.get(s, (s, {}))
            rows[s].append(simulate(strategy, seed=seed, n_nodes=args.nodes,
                                    n_clients=args.clients, duration=args.duration,
                                    load=args.load, refresh_s=args.refresh, **extra))
    def med(s: str, k: str) -> float:
        return statistics.median(r[k] for r in rows[s] if r[k] is not None)

    summary = {s: {k: med(s, k) for k in ("p50_s", "p95_s", "throughput_rps", "failed",
                                          "max_node_share", "util_cv")} for s in rows}
    rr, orc, mc = summary["round_robin"], summary["oracle"], summary["mcda"]
    targets = {"mcda_p95_vs_round_robin": mc["p95_s"] / rr["p95_s"],
               "mcda_p95_vs_oracle": mc["p95_s"] / orc["p95_s"]}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.out / f"scheduling-{stamp}.json"
    json_path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                     "runs": rows, "summary": summary, "targets": targets},
                                    indent=2))
    header = "| strategy | p50 s | p95 s | throughput req/s | failed | max node share | util CV |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for s in rows:
        m = summary[s]
        lines.append(f"| {s} | {m['p50_s']:.2f} | {m['p95_s']:.2f} | "
                     f"{m['throughput_rps']:.2f} | {m['failed']:.0f} | "
                     f"{m['max_node_share']:.3f} | {m['util_cv']:.2f} |")
    table = "\n".join(lines)
    verdicts = [
        f"MCDA p95 / round-robin p95 = {targets['mcda_p95_vs_round_robin']:.2f} "
        f"({'PASS' if targets['mcda_p95_vs_round_robin'] <= 0.6 else 'MISS'}: target <= 0.6)",
        f"MCDA p95 / oracle p95 = {targets['mcda_p95_vs_oracle']:.2f} "
        f"({'PASS' if targets['mcda_p95_vs_oracle'] <= 1.2 else 'MISS'}: target <= 1.2)",
    ]
    png = args.out / f"scheduling-{stamp}.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        xs = range(len(STRATEGIES))
        ax.bar([x - 0.2 for x in xs], [summary[s]["p50_s"] for s in STRATEGIES], 0.4,
               label="p50")
        ax.bar([x + 0.2 for x in xs], [summary[s]["p95_s"] for s in STRATEGIES], 0.4,
               label="p95")
        ax.set_xticks(list(xs), STRATEGIES, rotation=20)
        ax.set_ylabel("request latency (s)")
        ax.set_title(f"{args.nodes} nodes, {args.clients} clients, load {args.load}, "
                     f"views refreshed every {args.refresh} s, failures injected")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=110)
    except ImportError:
        png = None  # type: ignore[assignment]
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "scheduling.md").write_text(
        "# Scheduling simulation\n\n"
        "Generated by `python scripts/bench/scheduling.py` (medians over "
        f"{args.seeds} seeds; {args.nodes} heterogeneous nodes, {args.clients} independent "
        f"clients whose node-info views refresh every {args.refresh} s, plus the load each "
        "node reports in `accepted` and a refresh after each request, as the router does; "
        f"offered load {args.load} of capacity, {args.duration:.0f} simulated seconds; two "
        "nodes die, one slows 5x, one flaps). The oracle knows true queues and speeds. "
        "MCDA uses the default weights (free memory .4, load .3, latency .2, throughput .1) "
        "unless the row says otherwise.\n\n" + table + "\n\n"
        + "\n".join(f"- {v}" for v in verdicts) + "\n")
    print(table)
    for v in verdicts:
        print(v)
    print(f"results: {json_path}" + (f", plot: {png}" if png else "")
          + f" ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
