"""Is the owner of a node starved? Two measurements with the bundled model (issue #9).

Two `peerllm node` processes on 127.0.0.1: A serves the bundled model (preloaded), B
serves nothing and is bootstrapped to A, so whatever B is asked runs on A.

* **flood**: ``--flood`` (8) concurrent ``--flood-tokens`` (400) token completions are
  streamed through B (so they reach A as peer requests); once A reports them all
  admitted (running or queued), A's own user asks A's API for a ``--owner-tokens`` (2)
  token completion. Measured: the owner's latency (request sent → response read) and
  where its generation was admitted compared to the peers' (ttft).
* **stall**: a raw socket client on A's API sends one streaming completion of
  ``--stall-tokens`` tokens with a tiny receive buffer and never reads; once A reports it
  generating, a second local client asks for ``--owner-tokens`` tokens. Measured: the
  second client's latency, and what the stalled client gets when it reads afterwards
  (whether its stream ended cleanly or the connection was dropped).

Run it against any source tree (``--src``, default this checkout's ``src``), e.g. the
code before a change exported with ``git archive``:

    python scripts/bench/starvation.py --runs 2
    git archive 29e37b1 src | tar -x -C /tmp/base && \\
        python scripts/bench/starvation.py --src /tmp/base/src

Writes ``starvation-<timestamp>.json`` (every sample) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    REPO_ROOT,
    ProcessGroup,
    clean_env,
    fmt,
    free_ports,
    machine_info,
    managed_processes,
    table,
    timestamp_slug,
    wait_until,
    write_results,
)

MODEL = "gemma3-270m-q4_k_m"
PROMPT = "The old lighthouse keeper opened the logbook and began to write:"


def get_json(url: str) -> Any:
    try:
        return httpx.get(url, trust_env=False, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None


def load_of(api: str) -> dict[str, int]:
    info = get_json(api + "/v1/node/info")
    return info["load"] if info else {"active": 0, "queued": 0, "capacity": 0}


def start_nodes(group: ProcessGroup, logs: Path, src: Path, owner_args: list[str]
                ) -> tuple[str, str]:
    p2p_a, api_a, p2p_b, api_b = free_ports(4)
    env = clean_env(PYTHONPATH=str(src), MODEL_WARMUP_TOKENS="0")

    def spawn(name: str, p2p: int, api: int, *extra: str) -> None:
        group.spawn(name, [sys.executable, "-m", "peerllm", "node",
                           "--data-dir", str(logs / "data" / name), "--name", name,
                           "--listen", f"/ip4/127.0.0.1/tcp/{p2p}",
                           "--api", f"127.0.0.1:{api}", "--no-mdns", *extra],
                    logs / f"{name}.log", env=env)

    a, b = f"http://127.0.0.1:{api_a}", f"http://127.0.0.1:{api_b}"
    spawn("owner", p2p_a, api_a, "--preload", MODEL, *owner_args)
    info = wait_until(lambda: (doc := get_json(a + "/v1/node/info")) and any(
        m["id"] == MODEL and m["loaded"] for m in doc["models"]) and doc, timeout_s=120)
    if not info:
        raise SystemExit(f"node A did not load the model; see {logs}")
    spawn("peer", p2p_b, api_b, "--no-default-model", "--bootstrap",
          f"/ip4/127.0.0.1/tcp/{p2p_a}/p2p/{info['node']['peer_id']}")
    if not wait_until(lambda: any(p["state"] == "healthy" and MODEL in p["models"]
                                  for p in (get_json(b + "/v1/peers") or {}).get("peers", [])),
                      timeout_s=120):
        raise SystemExit(f"node B never saw A; see {logs}")
    return a, b


def completion(api: str, max_tokens: int, *, timeout_s: float, tag: str) -> dict[str, Any]:
    """One streamed completion; times to headers, first text and the end."""
    body = {"model": MODEL, "prompt": f"{PROMPT} ({tag})", "max_tokens": max_tokens,
            "temperature": 0.8, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    out: dict[str, Any] = {"tag": tag, "sent_at": t0, "ttft_s": None, "total_s": None,
                           "tokens": None, "status": None, "error": None}
    try:
        with httpx.stream("POST", api + "/v1/completions", json=body, trust_env=False,
                          timeout=httpx.Timeout(timeout_s)) as resp:
            out["status"] = resp.status_code
            for line in resp.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if out["ttft_s"] is None and chunk.get("choices") \
                        and chunk["choices"][0].get("text"):
                    out["ttft_s"] = time.perf_counter() - t0
                if chunk.get("usage"):
                    out["tokens"] = chunk["usage"]["completion_tokens"]
        out["total_s"] = time.perf_counter() - t0
    except httpx.HTTPError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["total_s"] = time.perf_counter() - t0
    return out


def flood_round(a: str, b: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    peers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda i=i: peers.append(completion(
        b, args.flood_tokens, timeout_s=600, tag=f"peer-{run}-{i}")), daemon=True)
        for i in range(args.flood)]
    for t in threads:
        t.start()
    admitted = wait_until(lambda: (ld := load_of(a))["active"] + ld["queued"] >= args.flood
                          and ld, timeout_s=60)
    owner = completion(a, args.owner_tokens, timeout_s=args.owner_timeout, tag=f"owner-{run}")
    for t in threads:
        t.join(900)
    done_before_owner = sum(1 for p in peers if p["total_s"] is not None
                            and p["sent_at"] + p["total_s"] < owner["sent_at"] + owner["total_s"])
    return {"admitted_at_owner_request": admitted, "owner": owner, "peers": peers,
            "peers_finished_before_owner": done_before_owner}


def stall_round(a: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    host, port = a.removeprefix("http://").split(":")
    body = json.dumps({"model": MODEL, "prompt": f"{PROMPT} (stalled {run})",
                       "max_tokens": args.stall_tokens, "temperature": 0.8,
                       "stream": True}).encode()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
    raw.connect((host, int(port)))
    raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    generating = wait_until(lambda: load_of(a)["active"] >= 1, timeout_s=60)
    second = completion(a, args.owner_tokens, timeout_s=args.owner_timeout,
                        tag=f"second-{run}")
    # Now read what the stalled client was sent: a clean end, or a dropped connection?
    raw.settimeout(1.0)
    data = bytearray()
    eof = False
    deadline = time.perf_counter() + args.drain_timeout
    while time.perf_counter() < deadline:
        try:
            part = raw.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            eof = True
            break
        if not part:
            eof = True
            break
        data += part
        if data.endswith(b"\r\n0\r\n\r\n"):
            break
    raw.close()
    return {"generating_before_second": bool(generating), "second": second,
            "stalled_bytes": len(data), "stalled_eof": eof,
            "stalled_finished_cleanly": data.endswith(b"\r\n0\r\n\r\n"),
            "stalled_got_done": b"data: [DONE]" in data}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=REPO_ROOT / "src")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--flood", type=int, default=8)
    ap.add_argument("--flood-tokens", type=int, default=400)
    ap.add_argument("--owner-tokens", type=int, default=2)
    ap.add_argument("--owner-timeout", type=float, default=300.0)
    ap.add_argument("--stall-tokens", type=int, default=1500)
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--scenarios", default="flood,stall")
    ap.add_argument("--owner-args", default="",
                    help="extra flags for node A, e.g. '--max-concurrent 2 --peer-share 0.5'")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = ap.parse_args()
    slug = timestamp_slug()
    logs = Path(f"/tmp/peerllm-starvation-{slug}")
    doc: dict[str, Any] = {"machine": machine_info(), "config": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "logs_dir": str(logs), "flood": [], "stall": []}
    scenarios = set(args.scenarios.split(","))
    with managed_processes() as group:
        a, b = start_nodes(group, logs, args.src, args.owner_args.split())
        completion(a, 8, timeout_s=120, tag="warmup")
        for run in range(args.runs):
            if "flood" in scenarios:
                doc["flood"].append(flood_round(a, b, args, run))
            if "stall" in scenarios:
                doc["stall"].append(stall_round(a, args, run))
                wait_until(lambda: load_of(a)["active"] == 0, timeout_s=300)
    path = write_results(args.out, "starvation", doc, slug)
    rows = []
    for r in doc["flood"]:
        o = r["owner"]
        rows.append(["flood: owner's request", str(o["status"]), fmt(o["ttft_s"], " s"),
                     fmt(o["total_s"], " s"), o["error"] or "",
                     f"{r['peers_finished_before_owner']}/{len(r['peers'])} peer requests "
                     "finished first"])
    for r in doc["stall"]:
        s = r["second"]
        rows.append(["stall: second client", str(s["status"]), fmt(s["ttft_s"], " s"),
                     fmt(s["total_s"], " s"), s["error"] or "",
                     f"stalled client: {r['stalled_bytes']} B, "
                     + ("ended cleanly" if r["stalled_finished_cleanly"] else
                        "dropped" if r["stalled_eof"] else "still open")])
    print(table(rows, ["scenario", "status", "ttft", "total", "error", "note"]))
    print(f"\nsource: {args.src}\nresults: {path}")
    doc["summary"] = [dict(zip(["scenario", "status", "ttft", "total", "error", "note"], r,
                               strict=True)) for r in rows]
    write_results(args.out, "starvation", doc, slug)


if __name__ == "__main__":
    main()
