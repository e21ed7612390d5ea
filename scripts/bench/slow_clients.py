"""Slow and aborted uploads against one real `peerllm node`: closed by the body timeout?

One node (no model: the requests never get past reading their body) with
``api.body_timeout_s`` set to --body-timeout. Then:

  (1) slow uploads: --slow connections each send a POST's headers announcing a 1,000-byte
      body, then 1 byte every --interval seconds. Each connection's fate is recorded: the
      node answered (the status line, 408 expected) and closed it, or it was still open
      at --body-timeout + --margin (then the benchmark closes it). While they are open,
      ``GET /v1/node/status`` is timed; once all are closed it is timed again at once.
  (2) aborted uploads: --aborts connections send headers and half a body, then close.
      The node's log is then searched for ERROR lines and tracebacks (the bar: none;
      a disconnect mid-body is one DEBUG line).

RSS of the node is sampled at baseline, at the peak of the flood, and --settle seconds
after everything closed. The bars: every slow connection closed by the node within
body_timeout + 2 s, status latency after the flood within 2x its baseline (and < 100 ms),
RSS after within 20 MB of baseline, no ERROR line.

    python scripts/bench/slow_clients.py                   # 300 slow, 2000 aborted, 30 s
    python scripts/bench/slow_clients.py --slow 50 --aborts 200 --body-timeout 5

JSON with every sample goes to scripts/bench/results/slow_clients-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import selectors
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    clean_env,
    free_ports,
    machine_info,
    managed_processes,
    now,
    rnd,
    rss_mb,
    summarize,
    table,
    timestamp_slug,
    verdict,
    wait_until,
    write_results,
)

BODY_BYTES = 1000
CLOSE_MARGIN_S = 2.0
RSS_MARGIN_MB = 20.0


def head(host: str, port: int, length: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def status_ms(url: str, samples: int = 5) -> float | None:
    """Median milliseconds of GET /v1/node/status (None if it failed)."""
    times: list[float] = []
    with httpx.Client(trust_env=False, timeout=30) as http:
        for _ in range(samples):
            t0 = now()
            try:
                http.get(f"{url}/v1/node/status").raise_for_status()
            except httpx.HTTPError:
                return None
            times.append((now() - t0) * 1000)
    return sorted(times)[len(times) // 2]


@dataclass
class Slow:
    sock: socket.socket
    opened: float
    answer: str | None = None  # the status line the node sent, if any
    closed_by_node_s: float | None = None  # seconds after opening


def slow_uploads(host: str, port: int, n: int, interval_s: float, give_up_s: float,
                 url: str, pid: int) -> dict[str, Any]:
    conns: list[Slow] = []
    sel = selectors.DefaultSelector()
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(head(host, port, BODY_BYTES))
        s.setblocking(False)
        c = Slow(s, now())
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    started = now()
    during: list[float | None] = []
    peak_rss = rss_mb(pid)
    next_byte = started
    while sel.get_map() and now() - started < give_up_s:
        if now() >= next_byte:  # one more byte on every connection still open
            for key in list(sel.get_map().values()):
                try:
                    key.fileobj.send(b"{")  # type: ignore[union-attr]
                except OSError:
                    pass  # closed by the node: its read below sees it
            next_byte += interval_s
            during.append(status_ms(url, samples=1))
            peak_rss = max(peak_rss or 0.0, rss_mb(pid) or 0.0)
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            if data and c.answer is None:
                c.answer = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if not data:
                c.closed_by_node_s = now() - c.opened
                sel.unregister(c.sock)
    still_open = len(sel.get_map())
    for c in conns:
        c.sock.close()
    sel.close()
    after_close = status_ms(url)
    closed = [c.closed_by_node_s for c in conns if c.closed_by_node_s is not None]
    answers: dict[str, int] = {}
    for c in conns:
        answers[c.answer or "(none)"] = answers.get(c.answer or "(none)", 0) + 1
    return {"connections": n, "closed_by_node": len(closed), "still_open": still_open,
            "close_after_s": summarize(closed), "answers": answers,
            "status_ms_during": [rnd(v) for v in during],
            "status_ms_after_close": rnd(after_close), "peak_rss_mb": rnd(peak_rss)}


def aborted_uploads(host: str, port: int, n: int) -> dict[str, Any]:
    t0 = now()
    for _ in range(n):
        with socket.create_connection((host, port)) as s:
            s.sendall(head(host, port, BODY_BYTES) + b"{" * (BODY_BYTES // 2))
    return {"connections": n, "seconds": rnd(now() - t0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slow", type=int, default=300, help="slow upload connections")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between bytes")
    ap.add_argument("--body-timeout", type=float, default=30.0, help="api.body_timeout_s")
    ap.add_argument("--margin", type=float, default=15.0,
                    help="give up on the node closing them this long past the timeout")
    ap.add_argument("--aborts", type=int, default=2000, help="aborted upload connections")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds between the last close and the RSS sample")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    slug, machine = timestamp_slug(), machine_info()
    work = Path(tempfile.mkdtemp(prefix="peerllm-slow-clients-"))
    host = "127.0.0.1"
    p2p, port = free_ports(2)
    url = f"http://{host}:{port}"
    config = work / "node.yaml"
    config.write_text(f"api:\n  body_timeout_s: {args.body_timeout}\n")
    with managed_processes() as group:
        child = group.spawn("node", [
            sys.executable, "-m", "peerllm", "node", "--config", str(config), "--data-dir",
            str(work / "data"), "--name", "slow", "--no-mdns", "--no-default-model",
            "--listen", f"/ip4/{host}/tcp/{p2p}", "--api", f"{host}:{port}"],
            work / "node.log", env=clean_env())
        if not wait_until(lambda: status_ms(url, samples=1), timeout_s=60):
            raise SystemExit(f"the node did not start:\n{child.log_tail()}")
        time.sleep(2)  # let start-up allocations settle before the baseline
        baseline = {"status_ms": rnd(status_ms(url, samples=11)), "rss_mb": rnd(rss_mb(child.pid))}
        slow = slow_uploads(host, port, args.slow, args.interval,
                            args.body_timeout + args.margin, url, child.pid)
        aborted = aborted_uploads(host, port, args.aborts)
        time.sleep(args.settle)
        after = {"status_ms": rnd(status_ms(url, samples=11)), "rss_mb": rnd(rss_mb(child.pid))}
        group.stop_all()
    log = (work / "node.log").read_text(errors="replace")
    errors = sum(" ERROR " in line or line.startswith("Traceback") for line in log.splitlines())
    close_max = slow["close_after_s"]["max"]
    checks = {
        "slow_closed_by_node": slow["still_open"] == 0
        and (close_max or 0) <= args.body_timeout + CLOSE_MARGIN_S,
        "status_after_close": (slow["status_ms_after_close"] or 1e9)
        <= max(2 * (baseline["status_ms"] or 0), 100.0),
        "rss_back_near_baseline": (after["rss_mb"] or 1e9)
        <= (baseline["rss_mb"] or 0) + RSS_MARGIN_MB,
        "no_error_lines": errors == 0}
    doc = {"args": vars(args) | {"out": str(args.out)}, "machine": machine,
           "logs_dir": str(work), "baseline": baseline, "slow": slow, "aborted": aborted,
           "after": after, "log_error_lines": errors, "checks": checks}
    out = write_results(args.out, "slow_clients", doc, slug)
    failed = not all(checks.values())
    if args.keep_logs or failed:
        print(f"logs kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    s = slow["close_after_s"]
    print(f"{args.slow} slow uploads (1 byte / {args.interval:g} s, body timeout "
          f"{args.body_timeout:g} s), then {args.aborts} aborted uploads")
    print(table([
        ["slow connections closed by the node", f"{slow['closed_by_node']}/{args.slow}", ""],
        ["  seconds to close p50 / max", f"{s['p50'] or 0:.1f} / {s['max'] or 0:.1f}",
         "PASS" if checks["slow_closed_by_node"] else "MISS"],
        ["  answers", ", ".join(f"{k}: {v}" for k, v in slow["answers"].items()), ""],
        ["status ms baseline / after close", f"{baseline['status_ms']} / "
         f"{slow['status_ms_after_close']}", "PASS" if checks["status_after_close"] else "MISS"],
        ["status ms during (max)", str(max((v for v in slow["status_ms_during"] if v),
                                           default=None)), ""],
        ["RSS MB baseline / peak / after", f"{baseline['rss_mb']} / {slow['peak_rss_mb']} / "
         f"{after['rss_mb']}", verdict((after["rss_mb"] or 1e9) - (baseline["rss_mb"] or 0),
                                       RSS_MARGIN_MB)],
        ["ERROR lines / tracebacks in the log", str(errors),
         "PASS" if checks["no_error_lines"] else "MISS"]],
        header=["measure", "value", "bar"]))
    print(f"results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
