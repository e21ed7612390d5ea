"""Load for the concurrency and soak benchmarks: concurrent SSE streams and per-process counters.

A stream is one ``POST /v1/completions`` with ``stream: true`` read line by line with a
sync httpx client in its own thread (the servers under test are other processes; the
GIL only delays when we *see* a chunk, by far less than a token's time). Threads start
together on a barrier so "C concurrent streams" means C requests in flight at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from _common import now, rss_mb

REQUEST_TIMEOUT_S = 600.0  # 16 streams queued behind a 1-slot server on 2 shared cores


@dataclass
class Stream:
    """What one streamed completion did; times are ``now()`` seconds."""

    t0: float
    ok: bool = False
    status: int | None = None
    error: str | None = None
    chunk_t: list[float] = field(default_factory=list)
    tokens: int = 0  # usage.completion_tokens when the server sends it, else text chunks
    tokens_source: str = "chunks"
    finish_reason: str | None = None
    served_by: str | None = None
    t_end: float | None = None
    disconnected: bool = False  # we hung up on purpose (soak)

    @property
    def ttft_s(self) -> float | None:
        return self.chunk_t[0] - self.t0 if self.chunk_t else None

    @property
    def stream_tokens_per_s(self) -> float | None:
        """Completion tokens over first-to-last chunk: the rate this user saw."""
        if len(self.chunk_t) < 2 or self.tokens < 2:
            return None
        return (self.tokens - 1) / (self.chunk_t[-1] - self.chunk_t[0])

    def as_json(self, origin: float) -> dict[str, Any]:
        return {"ok": self.ok, "status": self.status, "error": self.error,
                "tokens": self.tokens, "tokens_source": self.tokens_source,
                "finish_reason": self.finish_reason, "served_by": self.served_by,
                "disconnected": self.disconnected,
                "start_s": round(self.t0 - origin, 4),
                "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 3),
                "end_s": None if self.t_end is None else round(self.t_end - origin, 4),
                "stream_tokens_per_s": self.stream_tokens_per_s, "chunks": len(self.chunk_t)}


def stream_completion(client: httpx.Client, base: str, body: Mapping[str, Any], *,
                      hang_up_after: int | None = None) -> Stream:
    """One streamed completion; never raises for the server's failures (they are data).

    ``hang_up_after``: close the connection after that many text chunks (a user who
    leaves mid-stream); the stream then counts as ok, ``disconnected``.
    """
    s = Stream(t0=now())
    try:
        with client.stream("POST", f"{base}/v1/completions", json=body) as resp:
            s.status = resp.status_code
            s.served_by = resp.headers.get("x-peerllm-served-by")
            if resp.status_code != 200:
                resp.read()
                s.error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                return s
            for line in resp.iter_lines():
                if _take_line(s, line):
                    break
                if hang_up_after is not None and len(s.chunk_t) >= hang_up_after:
                    s.disconnected = True
                    break
    except httpx.HTTPError as exc:
        s.error = f"{type(exc).__name__}: {exc}"
        return s
    finally:
        s.t_end = now()
    s.ok = s.error is None and (s.disconnected or s.finish_reason is not None)
    if not s.ok and s.error is None:
        s.error = "the stream ended without a finish_reason"
    return s


def _take_line(s: Stream, line: str) -> bool:
    """Account one SSE line; True at the end of the stream."""
    if not line.startswith("data:"):
        return False
    data = line[5:].strip()
    if data == "[DONE]":
        return True
    obj = json.loads(data)
    if "error" in obj:
        s.error = f"error in stream: {obj['error']}"
        return True
    for choice in obj.get("choices") or []:
        if choice.get("text"):
            s.chunk_t.append(now())
            if s.tokens_source == "chunks":
                s.tokens += 1
        s.finish_reason = choice.get("finish_reason") or s.finish_reason
    usage = obj.get("usage")
    if usage and usage.get("completion_tokens") is not None:
        s.tokens, s.tokens_source = int(usage["completion_tokens"]), "usage"
    return False


def http_client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=10))


def concurrent_streams(base: str, bodies: Sequence[Mapping[str, Any]],
                       clients: Sequence[httpx.Client]) -> tuple[float, float, list[Stream]]:
    """Send ``bodies`` at once (one thread and client each); (released, all done, streams)."""
    n = len(bodies)
    barrier = threading.Barrier(n + 1)
    out: list[Stream | None] = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        out[i] = stream_completion(clients[i], base, bodies[i])

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = now()
    for t in threads:
        t.join()
    t1 = now()
    return t0, t1, [s if s is not None else Stream(t0=t0, error="thread died") for s in out]


# --------------------------------------------------------------------------- /proc counters


def fd_count(pid: int) -> int | None:
    """Open file descriptors of ``pid`` (sockets included), from /proc; None if gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def own_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` itself, all threads, not its children (the
    benchmark's own process is the parent of every server)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def cpu_of(pids: Mapping[str, int]) -> dict[str, float | None]:
    """CPU seconds so far of each named process."""
    return {name: own_cpu_seconds(pid) for name, pid in pids.items()}


def cpu_delta(before: Mapping[str, float | None], after: Mapping[str, float | None]
              ) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, b in before.items():
        a = after.get(name)
        out[name] = None if a is None or b is None else a - b
    return out


def process_sample(pids: Mapping[str, int]) -> dict[str, dict[str, float | int | None]]:
    """RSS (MB) and open fds of each named process, now."""
    return {name: {"rss_mb": rss_mb(pid), "fds": fd_count(pid)} for name, pid in pids.items()}


def get_json(url: str, timeout_s: float = 3.0) -> Any | None:
    """GET ``url`` as JSON; None on any failure (used while polling)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        r = httpx.get(url, trust_env=False, timeout=timeout_s)
        if r.status_code == 200:
            return r.json()
    return None


def get_text(url: str, timeout_s: float = 3.0) -> str | None:
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.get(url, trust_env=False, timeout=timeout_s)
        if r.status_code == 200:
            return r.text
    return None


def metric_value(text: str | None, name: str) -> float | None:
    """The value of an unlabelled Prometheus sample ``name`` in a /metrics page."""
    for line in (text or "").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            with contextlib.suppress(ValueError, IndexError):
                return float(line.split()[-1])
    return None
