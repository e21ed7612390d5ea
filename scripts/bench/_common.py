"""Shared helpers for the PeerLLM benchmarks: child processes, ports, stats, results.

Nothing here imports peerllm or libp2p, so a benchmark's orchestrator stays light;
only the processes it starts pay for the libp2p import.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS_DIR = REPO_ROOT / "scripts" / "bench" / "results"
TERM_GRACE_S = 5.0
"""How long a child gets between SIGTERM and SIGKILL."""


# --------------------------------------------------------------------------- time, ports


def now() -> float:
    """Monotonic seconds; every duration in the benchmarks is a difference of these."""
    return time.perf_counter()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago (all held open at once)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(pred: Callable[[], T | None], *, timeout_s: float,
               interval_s: float = 0.05) -> T | None:
    """Call ``pred`` until it returns something truthy or ``timeout_s`` passes."""
    deadline = now() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if now() >= deadline:
            return None
        time.sleep(interval_s)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100), linear between closest ranks; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (rank - lo))


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return percentile(present, 50.0)


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, min, p50, p95, p99, max and mean of ``values`` (None fields when empty)."""
    return {
        "n": len(values),
        "min": float(min(values)) if values else None,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": float(max(values)) if values else None,
        "mean": float(sum(values) / len(values)) if values else None,
    }


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- child processes


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment minus PEERLLM_* / NODE_* (they would override the flags we pass)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PEERLLM_", "NODE_")) and k != "NODE_NAME"}
    env["PYTHONUNBUFFERED"] = "1"  # the "ready" banner reaches the log file at once
    env.update(extra)
    return env


@dataclass
class Child:
    """One child process whose stdout and stderr go to ``log_path``."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    started_at: float
    exited_at: float | None = None
    term_sent_at: float | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """Every process a benchmark starts; ``stop_all`` is safe to call at any time.

    Children get their own session (so a terminal's Ctrl-C reaches only us, and we
    decide the order); ``stop_all`` sends SIGTERM to each process group, waits up to
    ``TERM_GRACE_S`` and SIGKILLs whatever is left.
    """

    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], log_path: Path, *,
              env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            t0 = now()
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=dict(env or clean_env()),
                                    cwd=cwd, start_new_session=True)
        child = Child(name=name, argv=list(argv), log_path=log_path, proc=proc, started_at=t0)
        self.children.append(child)
        return child

    def stop(self, children: Sequence[Child], grace_s: float = TERM_GRACE_S) -> None:
        """SIGTERM ``children`` together, then SIGKILL the ones still alive after grace_s."""
        live = [c for c in children if c.alive()]
        for c in live:
            c.term_sent_at = now()
            _signal_group(c.proc, signal.SIGTERM)
        deadline = now() + grace_s
        waiting = list(live)
        while waiting and now() < deadline:  # poll, so each exit time is its own
            time.sleep(0.02)
            for c in list(waiting):
                if c.proc.poll() is not None:
                    c.exited_at = now()
                    waiting.remove(c)
        for c in waiting:
            c.killed = True
            _signal_group(c.proc, signal.SIGKILL)
        for c in waiting:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(5.0)
            c.exited_at = now()

    def stop_all(self, grace_s: float = TERM_GRACE_S) -> None:
        self.stop(self.children, grace_s)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # start_new_session=True made the child a group leader: its pgid is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def managed_processes() -> Iterator[ProcessGroup]:
    """A ProcessGroup that is cleaned up on return, error, Ctrl-C, SIGTERM or SIGHUP."""
    group = ProcessGroup()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield group
    finally:
        # A second Ctrl-C during cleanup must not leave orphans behind.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            group.stop_all()
        finally:
            signal.signal(signal.SIGINT, old_int)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` plus its descendants, in MB (10^6 bytes)."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
        total = 0
        for q in procs:
            with contextlib.suppress(psutil.Error):
                total += q.memory_info().rss
        return total / 1e6
    except psutil.Error:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time consumed so far by ``pid`` (and its descendants)."""
    try:
        p = psutil.Process(pid)
        total = 0.0
        for q in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = q.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return None


# --------------------------------------------------------------------------- results


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (captured at the start of a benchmark)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    load1, load5, load15 = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "ram_total_mb": round(psutil.virtual_memory().total / 1e6),
        "ram_available_mb_at_start": round(psutil.virtual_memory().available / 1e6),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "versions": {d: _version(d) for d in ("peerllm", "libp2p", "trio", "hypercorn",
                                              "starlette", "httpx", "psutil")},
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def timestamp_slug() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def write_results(out_dir: Path, name: str, doc: Mapping[str, Any], slug: str) -> Path:
    """Write ``doc`` to ``out_dir/<name>-<slug>.json`` and return the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{slug}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def verdict(value: float | None, limit: float) -> str:
    """PASS when ``value`` ≤ ``limit``, MISS when above, n/a when not measured."""
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain-text table; the first column is left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
