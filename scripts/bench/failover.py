"""Real-cluster failover: kill -9 the node serving a stream, mid-stream, and restart it.

Three `peerllm node` processes on 127.0.0.1: two replicas of the bundled model and a
front node (no model) bootstrapped to both. A run streams ``--requests`` completions in a
row through the front; in ``--kills`` of them (spread evenly) it SIGKILLs the replica
serving the stream after a random number of chunks and restarts it (same identity and
ports). It measures whether every request still completed (the bar is zero lost), the
time from the kill to the next token reaching the client, and (polling the front's
/v1/peers from the kill on) the time until the dead node's circuit breaker is open and
until the front no longer lists it as healthy. ``--runs`` repeats that on fresh clusters.

Replicas preload the model by default (warm: a resume pays no model load); with
``--cold`` they serve it lazily, so a replica loads it on its first request and a
restarted replica is cold again. ``--rejoin wait`` (default) waits until a restarted
replica is back in rotation before the next request; ``--rejoin none`` restarts it the
moment it is killed and goes on at once, so requests meet a replica still starting.
``--forget-peers`` restarts it without its known peers, so it does not dial the front back.

    python scripts/bench/failover.py --kills 20
    python scripts/bench/failover.py --runs 8 --requests 6 --kills 3 --cold --rejoin none
    python scripts/bench/failover.py --kills 5 --signal stop   # freeze instead of kill
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Child,
    ProcessGroup,
    clean_env,
    free_ports,
    machine_info,
    managed_processes,
    summarize,
    table,
    timestamp_slug,
    wait_until,
    write_results,
)

MODEL = "gemma3-270m-q4_k_m"
REPLICAS = ("replica-a", "replica-c")


def get(url: str) -> Any:
    try:
        return httpx.get(url, trust_env=False, timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return None


def model_loaded(info: Any) -> bool:
    return bool(info) and any(m["id"] == MODEL and m["loaded"] for m in info["models"])


def healthy_replicas(front: str) -> set[str]:
    doc = get(front + "/v1/peers")
    if not doc:
        return set()
    return {p["peer_id"] for p in doc["peers"]
            if p["state"] == "healthy" and MODEL in p["models"]}


def breakers(front: str) -> dict[str, str]:
    doc = get(front + "/v1/peers")
    return {p["peer_id"]: str(p.get("breaker")) for p in (doc or {}).get("peers", [])}


@dataclass
class Cluster:
    """Two replicas and a front node; a killed replica restarts with its identity."""

    group: ProcessGroup
    logs: Path
    cold: bool
    log_level: str | None = None
    forget_peers: bool = False
    ports: list[int] = field(default_factory=lambda: free_ports(6))
    children: dict[str, Child] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # name -> peer id

    def api(self, name: str) -> int:
        return self.ports[2 * REPLICAS.index(name) + 1]

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.ports[5]}"

    def _spawn(self, name: str, p2p: int, api: int, *extra: str) -> Child:
        return self.group.spawn(name, [
            sys.executable, "-m", "peerllm", "node", "--data-dir",
            str(self.logs / "data" / name), "--name", name,
            "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api", f"127.0.0.1:{api}",
            "--no-mdns", *(("--log-level", self.log_level) if self.log_level else ()),
            *extra], self.logs / f"{name}.log",
            env=clean_env(MODEL_WARMUP_TOKENS="0"))

    def start_replica(self, name: str) -> None:
        i = REPLICAS.index(name)
        if self.forget_peers:  # it cannot dial back: the front has to find it again
            (self.logs / "data" / name / "known_peers.json").unlink(missing_ok=True)
        self.children[name] = self._spawn(name, self.ports[2 * i], self.ports[2 * i + 1],
                                          *(() if self.cold else ("--preload", MODEL)))

    def replica_ready(self, name: str) -> Any:
        """Its node-info once it can serve at once: up and, when warm, model loaded
        (--preload loads in the background: a resume on a replica still loading would
        measure the load)."""
        info = get(f"http://127.0.0.1:{self.api(name)}/v1/node/info")
        return info if info and (self.cold or model_loaded(info)) else None

    def start(self) -> None:
        for name in REPLICAS:
            self.start_replica(name)
        for name in REPLICAS:
            info = wait_until(lambda n=name: self.replica_ready(n), timeout_s=120)
            if not info:
                raise SystemExit(f"{name} did not start; see {self.logs}")
            self.ids[name] = info["node"]["peer_id"]
        boot = [arg for i, name in enumerate(REPLICAS) for arg in (
            "--bootstrap", f"/ip4/127.0.0.1/tcp/{self.ports[2 * i]}/p2p/{self.ids[name]}")]
        self.children["front"] = self._spawn("front", self.ports[4], self.ports[5],
                                             "--no-default-model", *boot)
        if not wait_until(lambda: len(healthy_replicas(self.front)) == 2 or None,
                          timeout_s=120):
            raise SystemExit(f"front never saw both replicas; see {self.logs}")

    def loaded(self) -> dict[str, bool]:
        """Peer id -> whether that replica has the model loaded right now."""
        return {self.ids[n]: model_loaded(get(f"http://127.0.0.1:{self.api(n)}/v1/node/info"))
                for n in REPLICAS}

    def name_of(self, peer_id: str | None) -> str | None:
        return next((n for n, p in self.ids.items() if p == peer_id), None)

    def wait_rejoined(self, name: str) -> None:
        """Back in rotation: ready, listed healthy by the front, no breaker open (a new
        process behind a tripped breaker goes half-open at once)."""
        if not wait_until(lambda: self.replica_ready(name), timeout_s=120):
            raise SystemExit(f"{name} did not come back; see {self.logs}")
        if not wait_until(lambda: (len(healthy_replicas(self.front)) == 2
                                   and not any(b.startswith("open")
                                               for b in breakers(self.front).values())) or None,
                          timeout_s=120):
            raise SystemExit(f"{name} did not rejoin; see {self.logs}")


class Watch(threading.Thread):
    """From the kill on, polls the front's /v1/peers: when does the victim's breaker open,
    and when does the front stop listing it as healthy?"""

    def __init__(self, front: str, victim: str, t0: float) -> None:
        super().__init__(daemon=True)
        self.front, self.victim, self.t0 = front, victim, t0
        self.breaker_open_s: float | None = None
        self.unhealthy_s: float | None = None

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=3) as http:
            while time.perf_counter() - self.t0 < 60 and (
                    self.breaker_open_s is None or self.unhealthy_s is None):
                try:
                    peers = http.get(self.front + "/v1/peers").json()["peers"]
                except (httpx.HTTPError, ValueError, KeyError):
                    peers = []
                now = time.perf_counter() - self.t0
                row = next((p for p in peers if p["peer_id"] == self.victim), None)
                if row is not None:
                    if self.breaker_open_s is None and str(row.get("breaker")).startswith("open"):
                        self.breaker_open_s = now
                    if self.unhealthy_s is None and row["state"] != "healthy":
                        self.unhealthy_s = now
                time.sleep(0.01)


def one_round(cluster: Cluster, *, max_tokens: int, kill_after: int | None,
              rng: random.Random, sig: signal.Signals, restart_at_once: bool
              ) -> dict[str, Any]:
    """One streamed request; with ``kill_after``, the serving replica gets ``sig`` after
    that many chunks (and, with ``restart_at_once``, is restarted right away)."""
    front = cluster.front
    body = {"model": MODEL, "prompt": f"Story {rng.random():.6f}: once upon a time",
            "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    loaded_before = cluster.loaded()
    chunks = 0
    killed_at = next_token_after_kill = None
    victim = None
    watch: Watch | None = None
    usage = provenance = error = None
    done = False
    try:
        with httpx.Client(trust_env=False, timeout=120) as http, \
                http.stream("POST", front + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                return {"ok": False, "error": f"HTTP {resp.status_code}: {resp.text[:2000]}",
                        "killed": False, "loaded_before": loaded_before}
            victim = resp.headers.get("x-peerllm-served-by")
            for line in resp.iter_lines():
                if line == "data: [DONE]":
                    done = True
                    break
                if not line.startswith("data: "):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = chunk["error"]
                    continue
                for choice in chunk.get("choices") or []:
                    if choice.get("text"):
                        chunks += 1
                        if killed_at is not None and next_token_after_kill is None:
                            next_token_after_kill = time.perf_counter() - killed_at
                usage = chunk.get("usage") or usage
                provenance = chunk.get("peerllm") or provenance
                name = cluster.name_of(victim)
                if kill_after is not None and killed_at is None and chunks >= kill_after \
                        and name is not None:
                    cluster.children[name].proc.send_signal(sig)
                    killed_at = time.perf_counter()
                    watch = Watch(front, str(victim), killed_at)
                    watch.start()
                    if restart_at_once:
                        cluster.children[name].proc.wait(10)
                        cluster.start_replica(name)
    except httpx.HTTPError as exc:
        error = repr(exc)
    if watch is not None:
        watch.join(65)
    resumed_on = (provenance or {}).get("served_by")
    ok = bool(done and usage and not error and usage["completion_tokens"] >= max_tokens - 1)
    return {"ok": ok, "victim": victim, "victim_name": cluster.name_of(victim),
            "chunks": chunks, "kill_after_chunks": kill_after,
            "killed": killed_at is not None, "kill_to_next_token_s": next_token_after_kill,
            "kill_to_breaker_open_s": watch.breaker_open_s if watch else None,
            "kill_to_unhealthy_s": watch.unhealthy_s if watch else None,
            "loaded_before": loaded_before,
            "resumed_onto_loaded": loaded_before.get(str(resumed_on)) if killed_at else None,
            "usage": usage, "peerllm": provenance, "error": error}


def one_run(args: argparse.Namespace, run: int, logs: Path, rng: random.Random,
            sig: signal.Signals) -> list[dict[str, Any]]:
    kill_rounds = {round(i * args.requests / args.kills) for i in range(args.kills)} \
        if args.kills else set()
    rounds: list[dict[str, Any]] = []
    with managed_processes() as group:
        cluster = Cluster(group, logs / f"run-{run}", cold=args.cold,
                          log_level=args.node_log_level, forget_peers=args.forget_peers)
        cluster.start()
        for r in range(args.requests):
            kill = r in kill_rounds
            res = one_round(cluster, max_tokens=args.max_tokens,
                            kill_after=rng.randint(2, 40) if kill else None, rng=rng, sig=sig,
                            restart_at_once=args.rejoin == "none" and sig is signal.SIGKILL)
            res |= {"run": run, "request": r}
            name = res.get("victim_name")
            if res["killed"] and name is not None and not (
                    args.rejoin == "none" and sig is signal.SIGKILL):
                if sig is signal.SIGSTOP:  # free its ports: a frozen process still holds them
                    cluster.children[name].proc.kill()
                    cluster.children[name].proc.wait(10)
                cluster.start_replica(name)
                if args.rejoin == "wait":
                    cluster.wait_rejoined(name)
            rounds.append(res)
            print(f"run {run} request {r + 1}: ok={res['ok']} killed={res['killed']} "
                  f"kill->next token {res['kill_to_next_token_s'] or 0:.3f}s "
                  f"(onto loaded: {res['resumed_onto_loaded']}), breaker open after "
                  f"{res['kill_to_breaker_open_s'] or 0:.3f}s, resumed="
                  f"{(res['peerllm'] or {}).get('resumed')}"
                  + (f"\n  error: {res['error']}" if res["error"] else ""), file=sys.stderr)
    return rounds


def stats(rounds: list[dict[str, Any]], key: str) -> dict[str, float | int | None]:
    return summarize([r[key] for r in rounds if r.get(key) is not None])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=1, help="independent runs, fresh clusters")
    ap.add_argument("--kills", type=int, default=20, help="kills per run")
    ap.add_argument("--requests", type=int, help="requests per run (default: --kills)")
    ap.add_argument("--cold", action="store_true",
                    help="replicas serve the model lazily (default: preloaded)")
    ap.add_argument("--rejoin", choices=("wait", "none"), default="wait",
                    help="wait: the next request waits until the restarted replica is back;"
                         "\nnone: restart at the kill and go on at once")
    ap.add_argument("--signal", choices=("kill", "stop"), default="kill",
                    help="kill: SIGKILL (the process dies, its kernel closes the connection);"
                         "\nstop: SIGSTOP (the process freezes, its connection stays open)")
    ap.add_argument("--forget-peers", action="store_true",
                    help="a replica restarts without its known peers (it does not dial back)")
    ap.add_argument("--node-log-level", choices=("debug", "info", "warning", "error"),
                    help="--log-level for every node (default: theirs)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    args.requests = args.requests or args.kills
    if not 0 <= args.kills <= args.requests:
        ap.error("--kills must be between 0 and --requests")
    rng = random.Random(args.seed)
    sig = signal.SIGKILL if args.signal == "kill" else signal.SIGSTOP
    slug = timestamp_slug()
    mode = "cold" if args.cold else "warm"
    logs = args.out / f"failover-{mode}-{slug}-logs"
    machine = machine_info()
    rounds = [res for run in range(args.runs) for res in one_run(args, run, logs, rng, sig)]
    failed = [r for r in rounds if not r["ok"]]
    killed = [r for r in rounds if r["killed"]]
    summary = {
        "mode": mode, "rejoin": args.rejoin, "runs": args.runs, "requests": len(rounds),
        "kills": len(killed), "failed_requests": len(failed),
        "runs_with_a_failed_request": len({r["run"] for r in failed}),
        "kill_to_next_token_s": stats(killed, "kill_to_next_token_s"),
        "kill_to_next_token_s_onto_loaded": stats(
            [r for r in killed if r["resumed_onto_loaded"]], "kill_to_next_token_s"),
        "kill_to_next_token_s_onto_unloaded": stats(
            [r for r in killed if r["resumed_onto_loaded"] is False], "kill_to_next_token_s"),
        "kill_to_breaker_open_s": stats(killed, "kill_to_breaker_open_s"),
        "kill_to_unhealthy_s": stats(killed, "kill_to_unhealthy_s"),
        "errors": [r["error"] for r in failed]}
    name = "failover" + ("" if args.signal == "kill" else f"-{args.signal}") + f"-{mode}"
    out = write_results(args.out, name, {"args": vars(args) | {"out": str(args.out)},
                                         "machine": machine, "logs": str(logs),
                                         "rounds": rounds, "summary": summary}, slug)

    def row(what: str, s: dict[str, float | int | None]) -> list[str]:
        return [what, str(s["n"]), *(f"{s[k]:.3f}" if s[k] is not None else "–"
                                     for k in ("p50", "p95", "max"))]

    print(f"{mode} replicas, rejoin={args.rejoin}: {args.runs} run(s), {len(rounds)} requests, "
          f"{len(killed)} kills; failed requests: {len(failed)} in "
          f"{summary['runs_with_a_failed_request']} run(s) "
          f"({'PASS' if not failed else 'MISS'}: target 0)")
    for err in summary["errors"]:
        print(f"  lost: {err}")
    print(table([row("kill -> next token", summary["kill_to_next_token_s"]),
                 row("  resumed on a loaded replica",
                     summary["kill_to_next_token_s_onto_loaded"]),
                 row("  resumed on an unloaded replica",
                     summary["kill_to_next_token_s_onto_unloaded"]),
                 row("kill -> breaker open", summary["kill_to_breaker_open_s"]),
                 row("kill -> not listed healthy", summary["kill_to_unhealthy_s"])],
                header=["seconds", "n", "p50", "p95", "max"]))
    p50 = summary["kill_to_next_token_s"]["p50"]
    print(f"kill -> next token p50 {p50 if p50 is None else round(p50, 3)} s "
          f"({'PASS' if p50 is not None and p50 <= 1.0 else 'MISS'}: target <= 1 s)")
    print(f"results: {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
