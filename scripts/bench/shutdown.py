"""Shutdown under load: SIGTERM N `peerllm node` processes together, time each one's exit.

N nodes on 127.0.0.1 in a bootstrap chain (node K dials node K-1; the DHT meshes them),
three of them serving the bundled model (lazily, as in discovery.py). Once every node
answers its API and lists the others healthy (or --mesh-timeout passed), all get SIGTERM
at the same instant and each one's exit is timed by polling. The bar: every node exits
within 5 s of SIGTERM, also on a busy machine (--busy K adds K CPU burners from just
before the signal on). A node still alive after --grace seconds is SIGKILLed and counted.
With --second-signal S, nodes still alive S seconds after the first SIGTERM get a second
one (which must stop them at once). With py-spy on PATH, --dump-after S writes the Python
stacks of nodes still alive S seconds after SIGTERM next to their logs (why is it slow?).

    python scripts/bench/shutdown.py                       # 20 nodes, 1 run
    python scripts/bench/shutdown.py --nodes 20 --runs 3 --busy 2
    python scripts/bench/shutdown.py --nodes 6 --second-signal 0.5
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
    now,
    rnd,
    summarize,
    table,
    timestamp_slug,
    wait_until,
    write_results,
)

TARGET_S = 5.0


def burn() -> None:  # a CPU burner, run in a child process
    while True:
        pass


def start_nodes(group: ProcessGroup, logs: Path, n: int) -> list[tuple[Child, str]]:
    """Start the chain one node at a time (node K needs K-1's peer id); (child, api)."""
    nodes: list[tuple[Child, str]] = []
    prev: str | None = None
    model_nodes = {n // 3, (2 * n) // 3, n - 1}
    for k in range(n):
        p2p, api = free_ports(2)
        name = f"stop-{k}"
        argv = [sys.executable, "-m", "peerllm", "node", "--data-dir",
                str(logs / "data" / name), "--name", name, "--no-mdns",
                "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api", f"127.0.0.1:{api}"]
        if k not in model_nodes:
            argv.append("--no-default-model")
        if prev is not None:
            argv += ["--bootstrap", prev]
        child = group.spawn(name, argv, logs / f"{name}.log", env=clean_env())
        url = f"http://127.0.0.1:{api}"
        info = wait_until(lambda u=url: get(f"{u}/v1/node/info"), timeout_s=60)
        if not info:
            raise SystemExit(f"{name} did not start:\n{child.log_tail()}")
        prev = f"/ip4/127.0.0.1/tcp/{p2p}/p2p/{info['node']['peer_id']}"
        nodes.append((child, url))
    return nodes


def get(url: str) -> Any:
    try:
        return httpx.get(url, trust_env=False, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None


def wait_for_mesh(urls: list[str], timeout_s: float) -> float | None:
    """Seconds until every node lists all the others healthy; None on timeout."""
    t0, pending = now(), set(urls)
    while pending and now() - t0 < timeout_s:
        for url in sorted(pending):
            doc = get(f"{url}/v1/peers")
            healthy = sum(p.get("state") == "healthy" for p in (doc or {}).get("peers", []))
            if healthy >= len(urls) - 1:
                pending.discard(url)
        time.sleep(0.5)
    return None if pending else now() - t0


def dump_stacks(child: Child, out: Path) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return
    res = subprocess.run([py_spy, "dump", "--pid", str(child.pid)], capture_output=True,
                         text=True, timeout=30)
    out.write_text(res.stdout + res.stderr)


def stop_together(children: list[Child], *, grace_s: float, second_s: float | None,
                  dump_after_s: float | None, logs: Path) -> dict[str, dict[str, Any]]:
    """SIGTERM every child at once; per child: exit time, code, second signal, SIGKILL.

    One thread per child waits for its exit, so each time is its own and a slow py-spy
    dump delays nobody's.
    """
    out: dict[str, dict[str, Any]] = {c.name: {"exit_s": None, "second_signal": False,
                                               "killed": False} for c in children}
    t0 = now()

    def wait(c: Child) -> None:
        c.proc.wait()
        out[c.name] |= {"exit_s": now() - t0, "returncode": c.proc.returncode}

    for c in children:
        os.killpg(c.pid, signal.SIGTERM)
    waiters = [threading.Thread(target=wait, args=(c,), daemon=True) for c in children]
    for w in waiters:
        w.start()

    def alive() -> list[Child]:
        return [c for c in children if out[c.name]["exit_s"] is None]

    dumps: list[threading.Thread] = []
    for at, action in sorted((t, a) for t, a in ((dump_after_s, "dump"), (second_s, "second"))
                             if t is not None and t < grace_s):
        time.sleep(max(0.0, at - (now() - t0)))
        for c in alive():
            if action == "second":
                out[c.name] |= {"second_signal": True, "second_signal_s": now() - t0}
                os.killpg(c.pid, signal.SIGTERM)
            else:
                dumps.append(threading.Thread(target=dump_stacks, daemon=True, args=(
                    c, logs / f"{c.name}.stacks.txt")))
                dumps[-1].start()
    for w in waiters:
        w.join(max(0.0, grace_s - (now() - t0)))
    for c in alive():
        out[c.name]["killed"] = True
        os.killpg(c.pid, signal.SIGKILL)
    for w in waiters + dumps:
        w.join(30)
    return out


def one_run(args: argparse.Namespace, run: int, logs: Path) -> dict[str, Any]:
    with managed_processes() as group:
        started = now()
        nodes = start_nodes(group, logs, args.nodes)
        children = [c for c, _ in nodes]
        mesh_s = wait_for_mesh([u for _, u in nodes], args.mesh_timeout)
        time.sleep(args.idle)
        burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.busy)]
        for b in burners:
            b.start()
        try:
            time.sleep(0.5 if burners else 0)
            load = os.getloadavg()[0]
            exits = stop_together(children, grace_s=args.grace, second_s=args.second_signal,
                                  dump_after_s=args.dump_after, logs=logs)
        finally:
            for b in burners:
                b.kill()
    for c in children:
        exits[c.name]["forced_exit_logged"] = "exiting now" in c.log_text()
    times = [e["exit_s"] for e in exits.values()]
    mesh = f"formed in {mesh_s:.1f} s" if mesh_s else "NOT formed"
    print(f"run {run}: mesh {mesh}; "
          f"exit p50 {summarize(times)['p50']:.2f} s, max {max(times):.2f} s, "
          f"over {TARGET_S:g} s: {sum(t > TARGET_S for t in times)}, "
          f"SIGKILLed: {sum(e['killed'] for e in exits.values())}", file=sys.stderr)
    return {"run": run, "setup_s": rnd(now() - started), "mesh_formed_s": rnd(mesh_s),
            "load1_at_signal": round(load, 2), "nodes": exits}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--busy", type=int, default=0, help="CPU burners during the shutdown")
    ap.add_argument("--idle", type=float, default=5.0,
                    help="seconds between the mesh forming and the SIGTERM")
    ap.add_argument("--mesh-timeout", type=float, default=180.0)
    ap.add_argument("--grace", type=float, default=10.0,
                    help="SIGKILL the nodes still alive this long after SIGTERM")
    ap.add_argument("--second-signal", type=float, metavar="S",
                    help="send nodes still alive S s after the SIGTERM a second one")
    ap.add_argument("--dump-after", type=float, metavar="S",
                    help="py-spy dump nodes still alive S s after the SIGTERM")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    slug = timestamp_slug()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="peerllm-shutdown-"))
    runs = [one_run(args, r, work / f"run-{r}") for r in range(args.runs)]
    nodes = [e for r in runs for e in r["nodes"].values()]
    times = [e["exit_s"] for e in nodes]
    first = [e["exit_s"] for e in nodes if not e["second_signal"]]
    after_second = [e["exit_s"] - e["second_signal_s"] for e in nodes if e["second_signal"]]
    summary = {
        "nodes_stopped": len(nodes), "exit_s": summarize(times),
        "over_target": sum(t > TARGET_S for t in times),
        "sigkilled": sum(e["killed"] for e in nodes),
        "forced_exit_logged": sum(e["forced_exit_logged"] for e in nodes),
        "exit_after_first_signal_s": summarize(first),
        "second_signals": len(after_second),
        "exit_after_second_signal_s": summarize(after_second),
        "returncodes": sorted({e.get("returncode") for e in nodes}, key=str)}
    doc = {"args": vars(args) | {"out": str(args.out)}, "machine": machine,
           "logs_dir": str(work), "runs": runs, "summary": summary}
    out = write_results(args.out, "shutdown", doc, slug)
    failed = summary["over_target"] or summary["sigkilled"]
    if args.keep_logs or failed:
        print(f"logs kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)

    def row(what: str, s: dict[str, float | int | None]) -> list[str]:
        return [what, str(s["n"]), *(f"{s[k]:.2f}" if s[k] is not None else "–"
                                     for k in ("p50", "p95", "max"))]

    print(f"{args.nodes} nodes x {args.runs} run(s), {args.busy} CPU burner(s), "
          f"load at SIGTERM {[r['load1_at_signal'] for r in runs]}")
    print(table([row("SIGTERM -> exit", summary["exit_s"]),
                 row("  exited on the first signal", summary["exit_after_first_signal_s"]),
                 row("  second signal -> exit", summary["exit_after_second_signal_s"])],
                header=["seconds", "n", "p50", "p95", "max"]))
    print(f"over {TARGET_S:g} s: {summary['over_target']}, SIGKILLed: {summary['sigkilled']}, "
          f"forced exits (watchdog or second signal): {summary['forced_exit_logged']}, "
          f"return codes {summary['returncodes']} "
          f"({'MISS' if failed else 'PASS'}: target every node <= {TARGET_S:g} s)")
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
