"""Real-cluster failover: kill -9 the node serving a stream, mid-stream, again and again.

Three `peerllm node` processes on 127.0.0.1: two replicas of the bundled model and a
front node (no model) bootstrapped to both. Each round streams a completion through the
front, SIGKILLs the replica serving it after a random number of chunks, and measures:
whether the request still completed, the time from the kill to the next token reaching
the client, and (polling the front's /v1/peers from the kill on) the time until the dead
node's circuit breaker is open and until the front no longer lists it as healthy. The victim is
restarted (same identity and ports) before the next round.

    python scripts/bench/failover.py --kills 20
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
    timestamp_slug,
    wait_until,
    write_results,
)

MODEL = "gemma3-270m-q4_k_m"


def start_node(group: ProcessGroup, logs: Path, name: str, p2p: int, api: int,
               *extra: str) -> Child:
    return group.spawn(name, [
        sys.executable, "-m", "peerllm", "node", "--data-dir", str(logs / "data" / name),
        "--name", name, "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api", f"127.0.0.1:{api}",
        "--no-mdns", *extra], logs / f"{name}.log", env=clean_env(MODEL_WARMUP_TOKENS="0"))


def start_replica(group: ProcessGroup, logs: Path, name: str, p2p: int, api: int) -> Child:
    # Preloaded: a failover target should not pay for a model load.
    return start_node(group, logs, name, p2p, api, "--preload", MODEL)


def get(url: str) -> Any:
    try:
        return httpx.get(url, trust_env=False, timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return None


def loaded_info(api: int) -> Any:
    """The replica's node-info once its model is loaded (--preload loads in the
    background: a round resuming on a replica still loading would measure the load)."""
    info = get(f"http://127.0.0.1:{api}/v1/node/info")
    if not info or not any(m["id"] == MODEL and m["loaded"] for m in info["models"]):
        return None
    return info


def healthy_replicas(front: str) -> set[str]:
    doc = get(front + "/v1/peers")
    if not doc:
        return set()
    return {p["peer_id"] for p in doc["peers"]
            if p["state"] == "healthy" and MODEL in p["models"]}


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


def breakers(front: str) -> dict[str, str]:
    doc = get(front + "/v1/peers")
    return {p["peer_id"]: str(p.get("breaker")) for p in (doc or {}).get("peers", [])}


def one_round(front: str, max_tokens: int, kill_after: int, procs: dict[str, Child],
              rng: random.Random, sig: signal.Signals) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": f"Story {rng.random():.6f}: once upon a time",
            "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
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
                return {"ok": False, "error": f"HTTP {resp.status_code}"}
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
                if killed_at is None and chunks >= kill_after and victim in procs:
                    procs[victim].proc.send_signal(sig)
                    killed_at = time.perf_counter()
                    watch = Watch(front, victim, killed_at)
                    watch.start()
    except httpx.HTTPError as exc:
        error = repr(exc)
    if watch is not None:
        watch.join(65)
    ok = bool(done and usage and not error and usage["completion_tokens"] >= max_tokens - 1)
    return {"ok": ok, "victim": victim, "chunks": chunks, "kill_after_chunks": kill_after,
            "killed": killed_at is not None, "kill_to_next_token_s": next_token_after_kill,
            "kill_to_breaker_open_s": watch.breaker_open_s if watch else None,
            "kill_to_unhealthy_s": watch.unhealthy_s if watch else None,
            "usage": usage, "peerllm": provenance, "error": error, "killed_at": killed_at}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--signal", choices=("kill", "stop"), default="kill",
                    help="kill: SIGKILL (the process dies, its kernel closes the connection);"
                         "\nstop: SIGSTOP (the process freezes, its connection stays open)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sig = signal.SIGKILL if args.signal == "kill" else signal.SIGSTOP
    slug = timestamp_slug()
    logs = args.out / f"failover-{slug}-logs"
    rounds: list[dict[str, Any]] = []
    with managed_processes() as group:
        ports = free_ports(6)
        specs = {"replica-1": (ports[0], ports[1]), "replica-2": (ports[2], ports[3])}
        children = {name: start_replica(group, logs, name, p2p, api)
                    for name, (p2p, api) in specs.items()}
        ids: dict[str, str] = {}
        for name, (_, api) in specs.items():
            info = wait_until(lambda a=api: loaded_info(a), timeout_s=120)
            if not info:
                raise SystemExit(f"{name} did not start; see {logs}")
            ids[name] = info["node"]["peer_id"]
        boot = [arg for name, (p2p, _) in specs.items()
                for arg in ("--bootstrap", f"/ip4/127.0.0.1/tcp/{p2p}/p2p/{ids[name]}")]
        start_node(group, logs, "front", ports[4], ports[5], "--no-default-model", *boot)
        front = f"http://127.0.0.1:{ports[5]}"
        if not wait_until(lambda: len(healthy_replicas(front)) == 2 or None, timeout_s=120):
            raise SystemExit(f"front never saw both replicas; see {logs}")
        for r in range(args.kills):
            procs = {ids[n]: c for n, c in children.items()}
            res = one_round(front, args.max_tokens, rng.randint(2, 40), procs, rng, sig)
            res.pop("killed_at", None)
            if res["killed"]:
                name = next(n for n in children if ids[n] == res["victim"])
                if sig is signal.SIGSTOP:  # free its ports: a frozen process still holds them
                    children[name].proc.kill()
                    children[name].proc.wait(10)
                p2p, api = specs[name]
                children[name] = start_replica(group, logs, name, p2p, api)
                if not wait_until(lambda a=api: loaded_info(a), timeout_s=120):
                    raise SystemExit(f"{name} did not load its model again; see {logs}")
                # Back in rotation: healthy again and its breaker no longer open (a new
                # process behind a tripped breaker goes half-open at once).
                if not wait_until(lambda: (len(healthy_replicas(front)) == 2
                                  and not any(b.startswith("open")
                                              for b in breakers(front).values())) or None,
                                  timeout_s=120):
                    raise SystemExit(f"{name} did not rejoin; see {logs}")
            rounds.append(res)
            print(f"round {r + 1}: ok={res['ok']} kill->next token "
                  f"{res['kill_to_next_token_s'] or 0:.3f}s, breaker open after "
                  f"{res['kill_to_breaker_open_s'] or 0:.3f}s, unhealthy after "
                  f"{res['kill_to_unhealthy_s'] or 0:.3f}s, resumed="
                  f"{(res['peerllm'] or {}).get('resumed')}", file=sys.stderr)
    failed = [r for r in rounds if not r["ok"]]
    k2t = [r["kill_to_next_token_s"] for r in rounds if r["kill_to_next_token_s"] is not None]
    k2b = [r["kill_to_breaker_open_s"] for r in rounds
           if r["kill_to_breaker_open_s"] is not None]
    k2u = [r["kill_to_unhealthy_s"] for r in rounds if r["kill_to_unhealthy_s"] is not None]
    summary = {"rounds": len(rounds), "kills": sum(r["killed"] for r in rounds),
               "failed_requests": len(failed), "kill_to_next_token_s": summarize(k2t),
               "kill_to_breaker_open_s": summarize(k2b), "kill_to_unhealthy_s": summarize(k2u)}
    name = "failover" if args.signal == "kill" else f"failover-{args.signal}"
    out = write_results(args.out, name, {"args": vars(args) | {"out": str(args.out)},
                                         "machine": machine_info(), "rounds": rounds,
                                         "summary": summary}, slug)
    p50 = summary["kill_to_next_token_s"].get("p50")
    print(f"kills: {summary['kills']}, failed requests: {len(failed)} "
          f"({'PASS' if not failed else 'MISS'}: target 0)")
    print(f"kill -> next token: p50 {p50}, max {summary['kill_to_next_token_s'].get('max')} s "
          f"({'PASS' if p50 is not None and p50 <= 1.0 else 'MISS'}: target p50 <= 1 s)")
    for key, what in (("kill_to_breaker_open_s", "dead node's breaker open"),
                      ("kill_to_unhealthy_s", "dead node no longer listed healthy")):
        print(f"kill -> {what}: p50 {summary[key].get('p50')}, max {summary[key].get('max')} s"
              f" ({len(k2b if key == 'kill_to_breaker_open_s' else k2u)} of "
              f"{summary['kills']} seen)")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
