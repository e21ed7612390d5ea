"""Moving one model file between two processes: the ceiling, the parts, and `peerllm pull`.

The same file in every case (default: the bundled model's GGUF, ~253 MB; ``--size-mb N``
for a random file instead), sender and receiver in separate processes on 127.0.0.1:

  tcp     raw TCP on loopback: ``socket.sendfile`` and 1 MiB ``sendall``, received with
          1 MiB ``recv_into`` (the ceiling on this machine)
  libp2p  one stream between two py-libp2p hosts built like PeerLLM's
          (``peerllm.p2p.host.open_host``: TCP + Noise + Yamux), writes of 65,507 B and 1 MiB
  http    a GET of the file from hypercorn + starlette (FileResponse), read with httpx
  pull    ``peerllm node`` daemons: holders serve the file (``--model``), a fresh puller
          pulls it through its HTTP API, from 1 source and from 3; kill -9 of the puller
          mid-transfer and the resumed pull; with ``models.side_channel`` on and off; and
          a pull of the file's URL from the http case's server

Per case and run: MB/s (10^6 B/s) and CPU seconds per GB (user+sys, psutil, of the sender
and of the receiver processes, from just before to just after the transfer); for a resume,
the time to finish and the bytes fetched twice. The receivers of tcp/libp2p/http count and
drop the bytes; a pull writes and verifies them. Medians over ``--runs`` (default 3), every
sample in scripts/bench/results/transfer-<timestamp>.json, a summary with the issue's
targets on stdout.

    python scripts/bench/transfer.py                      # all cases, 3 runs
    python scripts/bench/transfer.py --cases tcp,libp2p --size-mb 512 --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    REPO_ROOT,
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
    table,
    timestamp_slug,
    wait_until,
    write_results,
)

MODEL_ID = "gemma3-270m-q4_k_m"
MIB = 1 << 20
BULK_PROTOCOL = "/peerllm-bench/bulk/1.0.0"
ALL_CASES = ("disk", "tcp", "libp2p", "http", "pull", "url")
# The targets (#13, Deliver 8).
PULL_MBPS_TARGET = 110.0  # MB/s from one source; three sources must do better
CPU_S_PER_GB_TARGET = 2.0  # on each side
REFETCH_CHUNKS_TARGET = 1.0  # chunks fetched twice per resume
DONE_TIMEOUT_S = 600.0


# =========================================================================== child roles
# Each child is `python transfer.py _child ROLE CTL_DIR ARGS_JSON`. It talks to the
# orchestrator through files in CTL_DIR: it writes ready.json once it can transfer, a
# receiver waits for go-<i> before run i and writes done-<i>.json after it. Polling a
# file costs next to nothing, and the orchestrator reads every CPU counter itself.


def _ctl_write(ctl: Path, name: str, doc: dict[str, Any]) -> None:
    tmp = ctl / f".{name}.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(ctl / name)


def _file_slices(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(size):
            yield chunk


def _tcp_send(ctl: Path, a: dict[str, Any]) -> None:
    path, mode = Path(a["file"]), a["mode"]
    srv = socket.create_server(("127.0.0.1", 0))
    _ctl_write(ctl, "ready.json", {"port": srv.getsockname()[1]})
    buf = bytearray(MIB)
    view = memoryview(buf)
    while True:
        conn, _ = srv.accept()
        with conn, open(path, "rb", buffering=0) as f:
            if mode == "sendfile":
                conn.sendfile(f)
            else:
                while n := f.readinto(buf):
                    conn.sendall(view[:n])


def _tcp_recv(ctl: Path, a: dict[str, Any]) -> None:
    buf = bytearray(MIB)
    _ctl_write(ctl, "ready.json", {})
    for i in range(a["runs"]):
        while not (ctl / f"go-{i}").exists():
            time.sleep(0.002)
        t0 = time.perf_counter()
        total = 0
        with socket.create_connection(("127.0.0.1", a["port"])) as s:
            while n := s.recv_into(buf):
                total += n
        _ctl_write(ctl, f"done-{i}.json", {"bytes": total, "seconds": time.perf_counter() - t0})


def _p2p_identity(ctl: Path, name: str) -> Any:
    from peerllm.identity import load_identity
    return load_identity(ctl / "identity", name=name)


def _p2p_send(ctl: Path, a: dict[str, Any]) -> None:
    import trio

    from peerllm.p2p.host import open_host

    path, write = Path(a["file"]), int(a["write"])

    async def handler(stream: Any) -> None:
        # Blocking reads of a page-cached file: what a simple server would do.
        for piece in _file_slices(path, write):
            await stream.send_all(piece)
        await stream.aclose()

    async def main() -> None:
        listen = f"/ip4/127.0.0.1/tcp/{a['port']}"
        async with open_host(_p2p_identity(ctl, "bench-send"), listen=[listen]) as host:
            host.set_handler(BULK_PROTOCOL, handler)
            _ctl_write(ctl, "ready.json", {"addr": f"{listen}/p2p/{host.peer_id}"})
            await trio.sleep_forever()

    trio.run(main)


def _p2p_recv(ctl: Path, a: dict[str, Any]) -> None:
    import trio

    from peerllm.p2p.host import open_host

    async def main() -> None:
        listen = f"/ip4/127.0.0.1/tcp/{a['port']}"
        async with open_host(_p2p_identity(ctl, "bench-recv"), listen=[listen]) as host:
            peer = await host.connect_addr(a["addr"])  # dial + Noise outside the timing
            _ctl_write(ctl, "ready.json", {"peer": peer})
            for i in range(a["runs"]):
                while not (ctl / f"go-{i}").exists():
                    await trio.sleep(0.002)
                t0 = time.perf_counter()
                stream = await host.open_stream(peer, BULK_PROTOCOL)
                total = 0
                while data := await stream.receive_some(MIB):
                    total += len(data)
                seconds = time.perf_counter() - t0
                await stream.aclose()
                _ctl_write(ctl, f"done-{i}.json", {"bytes": total, "seconds": seconds})

    trio.run(main)


def _http_send(ctl: Path, a: dict[str, Any]) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, PlainTextResponse, Response
    from starlette.routing import Route

    class MibFileResponse(FileResponse):
        chunk_size = MIB  # starlette's default is 64 KiB

    async def model(request: Request) -> Response:
        return MibFileResponse(a["file"], media_type="application/octet-stream")

    async def ping(request: Request) -> Response:
        return PlainTextResponse("ok")

    name = Path(a["file"]).name  # a URL pull names the model after the file, as ours
    app = Starlette(routes=[Route(f"/{name}", model), Route("/ping", ping)])
    cfg = Config()
    cfg.bind = [f"127.0.0.1:{a['port']}"]
    cfg.accesslog = None
    _ctl_write(ctl, "ready.json", {"url": f"http://127.0.0.1:{a['port']}/{name}"})
    trio.run(serve, app, cfg)


def _http_recv(ctl: Path, a: dict[str, Any]) -> None:
    import trio

    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
            for _ in range(300):  # the server wrote ready.json just before it binds
                try:
                    await client.get(a["url"].rsplit("/", 1)[0] + "/ping")  # kept alive
                    break
                except httpx.ConnectError:
                    await trio.sleep(0.1)
            _ctl_write(ctl, "ready.json", {})
            for i in range(a["runs"]):
                while not (ctl / f"go-{i}").exists():
                    await trio.sleep(0.002)
                t0 = time.perf_counter()
                total = 0
                async with client.stream("GET", a["url"]) as resp:
                    resp.raise_for_status()
                    async for chunk in resp.aiter_raw(MIB):
                        total += len(chunk)
                _ctl_write(ctl, f"done-{i}.json",
                           {"bytes": total, "seconds": time.perf_counter() - t0})

    trio.run(main)


def _disk_write(ctl: Path, a: dict[str, Any]) -> None:
    """What writing the file costs, alone: 4 MiB pwrites into a new file next to the
    pullers' data dirs (the floor of a pull's receiver CPU on this disk)."""
    buf = os.urandom(4 * MIB)
    _ctl_write(ctl, "ready.json", {})
    for i in range(a["runs"]):
        while not (ctl / f"go-{i}").exists():
            time.sleep(0.002)
        path = ctl.parent.parent / f"disk-write-{i}.bin"
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for off in range(0, a["size"], len(buf)):
                os.pwrite(fd, buf[:min(len(buf), a["size"] - off)], off)
        finally:
            os.close(fd)
        seconds = time.perf_counter() - t0
        path.unlink()
        _ctl_write(ctl, f"done-{i}.json", {"bytes": a["size"], "seconds": seconds})


ROLES: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "disk-write": _disk_write,
    "tcp-send": _tcp_send, "tcp-recv": _tcp_recv, "p2p-send": _p2p_send,
    "p2p-recv": _p2p_recv, "http-send": _http_send, "http-recv": _http_recv,
}


def child_main(argv: Sequence[str]) -> None:
    role, ctl, args = argv[0], Path(argv[1]), json.loads(argv[2])
    ROLES[role](ctl, args)


# =========================================================================== orchestrator


CHILD_SRC = [REPO_ROOT / "src"]  # --src replaces it


def child_env() -> dict[str, str]:
    """Children run this checkout's code, or --src (an editable install may point elsewhere)."""
    src = str(CHILD_SRC[0])
    old = os.environ.get("PYTHONPATH")
    return clean_env(PYTHONPATH=f"{src}{os.pathsep}{old}" if old else src,
                     MODEL_WARMUP_TOKENS="0")


def wait_file(path: Path, child: Child, timeout_s: float) -> dict[str, Any]:
    """The JSON a child wrote to ``path``; raises if the child died or took too long."""
    def ready() -> tuple[dict[str, Any]] | None:  # a tuple: an empty doc is an answer too
        if path.exists():
            return (json.loads(path.read_text()),)
        if not child.alive():
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}) before "
                               f"{path.name}: {child.log_tail(8)}")
        return None
    found = wait_until(ready, timeout_s=timeout_s, interval_s=0.005)
    if found is None:
        raise RuntimeError(f"{child.name}: no {path.name} within {timeout_s:.0f} s")
    return found[0]


def io_chars(child: Child) -> tuple[int | None, int | None]:
    """Bytes the process has read and written through syscalls so far (sockets and files;
    /proc/<pid>/io rchar and wchar), or Nones when it cannot be read."""
    try:
        io = psutil.Process(child.pid).io_counters()
    except (psutil.Error, AttributeError):
        return None, None
    return int(getattr(io, "read_chars", 0)) or None, int(getattr(io, "write_chars", 0)) or None


def cpu_of(children: Sequence[Child]) -> list[float | None]:
    return [cpu_seconds(c.pid) for c in children]


def cpu_delta(before: Sequence[float | None], after: Sequence[float | None]) -> float | None:
    if any(v is None for v in (*before, *after)):
        return None
    return sum(float(b) for b in after if b is not None) - sum(
        float(a) for a in before if a is not None)


def per_gb(cpu: float | None, nbytes: int) -> float | None:
    return None if cpu is None or nbytes <= 0 else cpu / (nbytes / 1e9)


def sample(nbytes: int, seconds: float, send_cpu: float | None, recv_cpu: float | None,
           **extra: Any) -> dict[str, Any]:
    return {"bytes": nbytes, "seconds": rnd(seconds, 4), "mb_s": rnd(nbytes / seconds / 1e6, 1),
            "cpu_s_per_gb_send": rnd(per_gb(send_cpu, nbytes)),
            "cpu_s_per_gb_recv": rnd(per_gb(recv_cpu, nbytes)),
            "cpu_s_send": rnd(send_cpu), "cpu_s_recv": rnd(recv_cpu),
            "load1_after": round(os.getloadavg()[0], 2), **extra}


@dataclass
class Case:
    """One measured case: its samples, or why it could not run."""

    name: str
    group: str
    config: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def med(self, key: str) -> float | None:
        return median([s.get(key) for s in self.samples if s.get("ok", True)])

    def doc(self) -> dict[str, Any]:
        keys = ("mb_s", "seconds", "cpu_s_per_gb_send", "cpu_s_per_gb_recv",
                "resume_seconds", "restart_to_done_seconds", "refetched_bytes",
                "refetched_chunks", "sources_used")
        return {"name": self.name, "group": self.group, "config": self.config,
                "error": self.error, "samples": self.samples,
                "median": {k: rnd(self.med(k), 3) for k in keys
                           if any(k in s for s in self.samples)}}


@dataclass
class Pair:
    """A sender and a receiver child that move the file once per go-file."""

    case: Case
    sender: Child | None  # None: the receiver alone (the disk-write floor)
    receiver: Child
    ctl: Path

    def run(self, i: int, size: int) -> None:
        senders = [self.sender] if self.sender else []
        before = cpu_of(senders), cpu_of([self.receiver])
        (self.ctl / f"go-{i}").touch()
        try:
            done = wait_file(self.ctl / f"done-{i}.json", self.receiver, DONE_TIMEOUT_S)
        except RuntimeError as exc:
            self.case.samples.append({"run": i, "ok": False, "error": str(exc)})
            return
        after = cpu_of(senders), cpu_of([self.receiver])
        ok = done["bytes"] == size
        self.case.samples.append({"run": i, "ok": ok, **sample(
            done["bytes"], done["seconds"],
            cpu_delta(before[0], after[0]) if senders else None,
            cpu_delta(before[1], after[1]))} | ({} if ok else {
                "error": f"received {done['bytes']} of {size} bytes"}))


def spawn_role(group: ProcessGroup, logs: Path, name: str, role: str,
               args: dict[str, Any]) -> tuple[Child, Path]:
    ctl = logs / "ctl" / name
    ctl.mkdir(parents=True, exist_ok=True)
    child = group.spawn(name, [sys.executable, str(Path(__file__).resolve()), "_child", role,
                               str(ctl), json.dumps(args)], logs / f"{name}.log", env=child_env())
    return child, ctl


def start_pair(group: ProcessGroup, logs: Path, case: Case, send_role: str,
               send_args: dict[str, Any], recv_role: str,
               recv_args: Callable[[dict[str, Any]], dict[str, Any]]) -> Pair | None:
    """Start the sender, then the receiver with what the sender's ready.json said."""
    try:
        sender, sctl = spawn_role(group, logs, f"{case.name}-send", send_role, send_args)
        ready = wait_file(sctl / "ready.json", sender, 60)
        receiver, rctl = spawn_role(group, logs, f"{case.name}-recv", recv_role, recv_args(ready))
        wait_file(rctl / "ready.json", receiver, 60)
    except RuntimeError as exc:
        case.error = f"could not start: {exc}"
        return None
    return Pair(case, sender, receiver, rctl)


def _p2p_recv_args(ready: dict[str, Any], *, port: int, runs: int) -> dict[str, Any]:
    return {"addr": ready["addr"], "port": port, "runs": runs}


def simple_cases(group: ProcessGroup, logs: Path, file: Path, size: int, runs: int,
                 wanted: Sequence[str]) -> list[Case]:
    """disk, tcp, libp2p and http: every pair started first, then the runs interleaved."""
    pairs: list[Pair] = []
    cases: list[Case] = []
    if "tcp" in wanted:
        for mode in ("sendfile", "sendall"):
            case = Case(f"tcp-{mode}", "tcp", {"send": mode if mode == "sendfile" else
                                                 "sendall 1 MiB", "recv": "recv_into 1 MiB"})
            cases.append(case)
            pair = start_pair(group, logs, case, "tcp-send", {"file": str(file), "mode": mode},
                              "tcp-recv", lambda r: {"port": r["port"], "runs": runs})
            pairs += [pair] if pair else []
    if "libp2p" in wanted:
        for write in (65_507, MIB):
            case = Case(f"libp2p-{write}", "libp2p",
                        {"write_bytes": write, "read_bytes": MIB, "stack": "TCP+Noise+Yamux",
                         "PY_YAMUX_RELEASE_ON_READ": os.environ.get("PY_YAMUX_RELEASE_ON_READ")})
            cases.append(case)
            sport, rport = free_ports(2)
            pair = start_pair(group, logs, case, "p2p-send",
                              {"file": str(file), "write": write, "port": sport}, "p2p-recv",
                              functools.partial(_p2p_recv_args, port=rport, runs=runs))
            pairs += [pair] if pair else []
    if "disk" in wanted:
        case = Case("disk-write", "disk", {"write": "pwrite 4 MiB into a new file",
                                           "dir": str(logs)})
        cases.append(case)
        try:
            writer, wctl = spawn_role(group, logs, "disk-write", "disk-write",
                                      {"size": size, "runs": runs})
            wait_file(wctl / "ready.json", writer, 60)
            pairs.append(Pair(case, None, writer, wctl))
        except RuntimeError as exc:
            case.error = f"could not start: {exc}"
    if "http" in wanted:
        case = Case("http", "http", {"server": "hypercorn (trio) + starlette FileResponse, "
                                     "1 MiB chunks", "client": "httpx.AsyncClient, aiter_raw"})
        cases.append(case)
        (port,) = free_ports(1)
        pair = start_pair(group, logs, case, "http-send", {"file": str(file), "port": port},
                          "http-recv", lambda r: {"url": r["url"], "runs": runs})
        pairs += [pair] if pair else []
    for i in range(runs):
        for pair in pairs:
            announce(pair.case, i, runs)
            pair.run(i, size)
            last = pair.case.samples[-1]
            print(f" {last.get('mb_s', '–')} MB/s" if last["ok"] else f" failed: {last['error']}")
    group.stop([c for p in pairs for c in (p.receiver, p.sender) if c is not None])
    return cases


# =========================================================================== the file


def bundled_model(dir_: Path) -> Path:
    """The bundled model's GGUF, hard-linked (else copied) to ``dir_/<model id>.gguf``."""
    from peerllm.inference.catalog import assemble_bundled

    cached = Path(assemble_bundled())
    path = dir_ / f"{MODEL_ID}.gguf"
    try:
        os.link(cached, path)
    except OSError:  # another file system
        shutil.copyfile(cached, path)
    return path


RANDOM_MODEL_ID = "bench-random"


def random_file(dir_: Path, size_mb: int) -> Path:
    """``size_mb`` MB: a GGUF header (which a node's check accepts) and random bytes."""
    from peerllm.testing import FAKE_GGUF

    path = dir_ / f"{RANDOM_MODEL_ID}.gguf"
    left = size_mb * 1_000_000 - len(FAKE_GGUF)
    with open(path, "wb") as f:
        f.write(FAKE_GGUF)
        while left > 0:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n
    return path


PRECOMPUTE = """
import sys, time
from pathlib import Path
from peerllm.transfer.digests import DigestCache
t0 = time.perf_counter()
m = DigestCache().manifest(Path(sys.argv[1]))
print(m.digest, m.chunk_bytes, m.count, round(time.perf_counter() - t0, 2))
"""


def precompute_manifest(path: Path) -> dict[str, Any]:
    """The file's manifest, computed (or found) by the children's own DigestCache before
    any node starts, so its sidecar is there when a holder is asked for the file."""
    try:
        out = subprocess.run([sys.executable, "-c", PRECOMPUTE, str(path)], env=child_env(),
                             capture_output=True, text=True, timeout=600, check=True)
        digest, chunk, count, seconds = out.stdout.split()
    except (subprocess.SubprocessError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"digest": digest, "chunk_bytes": int(chunk), "chunks": int(count),
            "seconds": float(seconds)}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    for piece in _file_slices(path, 4 * MIB):
        h.update(piece)
    return "sha256:" + h.hexdigest()


# =========================================================================== pull


def get_json(url: str, timeout_s: float = 3.0) -> Any:
    try:
        resp = httpx.get(url, trust_env=False, timeout=timeout_s)
        return resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def local_model(info: Any, model_id: str) -> dict[str, Any] | None:
    if not info:
        return None
    return next((m for m in info.get("models", []) if m.get("id") == model_id), None)


def pull_events(api: str, ref: str, *, timeout_s: float = DONE_TIMEOUT_S
                ) -> Iterator[dict[str, Any]]:
    """The progress events of a pull through ``api``: SSE from ``POST /v1/models/pull``, or
    NDJSON from Ollama's ``POST /api/pull`` when the first route is not there."""
    with httpx.Client(trust_env=False, timeout=httpx.Timeout(timeout_s, connect=5)) as http:
        for url, body in ((f"{api}/v1/models/pull", {"model": ref}),
                          (f"{api}/api/pull", {"model": ref, "stream": True})):
            with http.stream("POST", url, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    if no_such_route(resp):
                        continue
                    raise RuntimeError(f"POST {url}: {resp.status_code} {resp.text[:300]}")
                for line in resp.iter_lines():
                    line = line.strip()
                    if line.startswith("data:"):
                        line = line[5:].strip()
                    if not line or line.startswith((":", "event:", "id:")) or line == "[DONE]":
                        continue
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        yield doc
                return
        raise RuntimeError(f"{api} has neither POST /v1/models/pull nor POST /api/pull")


def no_such_route(resp: httpx.Response) -> bool:
    """The node has no such route (its 404/405 codes), as opposed to the route's own 404
    (say, ``model_not_found``)."""
    if resp.status_code not in (404, 405):
        return False
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return True
    code = err.get("code") if isinstance(err, dict) else None
    return code in (None, "not_found", "method_not_allowed")


def event_done(ev: dict[str, Any]) -> bool:
    return ev.get("status") == "success" or ev.get("state") == "done"


def event_error(ev: dict[str, Any]) -> str | None:
    err = ev.get("error")
    if err:
        return str(err.get("message", err) if isinstance(err, dict) else err)
    return "failed" if ev.get("state") == "failed" else None


def event_progress(ev: dict[str, Any]) -> dict[str, Any]:
    """completed / total / resumed / sources of an event, whichever it carries."""
    inner = ev.get("progress")
    prog: dict[str, Any] = inner if isinstance(inner, dict) else ev
    return {k: prog.get(k) for k in ("completed", "total", "resumed", "sources", "state",
                                     "model") if prog.get(k) is not None}


def signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)  # a session leader: its pgid is its pid


def kill9(child: Child) -> None:
    """SIGKILL the child's process group (no graceful shutdown) and reap it."""
    signal_group(child, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.proc.wait(10)
    child.killed = True
    child.exited_at = now()


@dataclass
class Node:
    child: Child
    name: str
    p2p: int
    api_port: int
    argv_extra: list[str]
    data_dir: Path
    peer_id: str = ""

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p}/p2p/{self.peer_id}"


@dataclass
class PullBench:
    """Holders serving the file and fresh pullers, for one ``models.side_channel`` value."""

    group: ProcessGroup
    logs: Path
    side_channel: bool
    model_args: list[str]  # how holders serve the file (none = the bundled model)
    model_id: str
    size: int
    chunk_bytes: int | None = None
    digest: str | None = None  # the file's, to check what the puller registered
    holders: list[Node] = field(default_factory=list)
    serial: int = 0
    tag: str = ""  # names its nodes and files; default sc-on / sc-off

    def __post_init__(self) -> None:
        self.tag = self.tag or ("sc-on" if self.side_channel else "sc-off")

    def config_file(self) -> Path:
        path = self.logs / f"node-{self.tag}.yaml"
        path.write_text(f"models:\n  side_channel: {'true' if self.side_channel else 'false'}\n")
        return path

    def spawn(self, name: str, extra: Sequence[str], data_dir: Path,
              ports: tuple[int, int] | None = None) -> Node:
        p2p, api = ports or tuple(free_ports(2))
        argv = [sys.executable, "-m", "peerllm", "node", "--config", str(self.config_file()),
                "--data-dir", str(data_dir), "--name", name,
                "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api", f"127.0.0.1:{api}",
                "--no-mdns", *extra]
        child = self.group.spawn(name, argv, self.logs / f"{name}.log", env=child_env())
        return Node(child, name, p2p, api, list(extra), data_dir)

    def wait_up(self, node: Node, *, model: bool, timeout_s: float = 120) -> None:
        """Its API answers (and, for a holder, its model has a digest to advertise)."""
        def up() -> Any:
            if not node.child.alive():
                raise RuntimeError(f"{node.name} exited: {node.child.log_tail(8)}")
            info = get_json(node.api + "/v1/node/info")
            if not info or not model:
                return info
            # A holder is ready once it knows the model's digest (code whose model status
            # has no digest field at all: once it lists the model).
            status = get_json(f"{node.api}/v1/models/{self.model_id}")
            if not status or ("digest" in status and not status["digest"]):
                return None
            return info
        info = wait_until(up, timeout_s=timeout_s, interval_s=0.1)
        if not info:
            raise RuntimeError(f"{node.name} not up{' with a digest' if model else ''} "
                               f"within {timeout_s:.0f} s; see {node.child.log_path}")
        node.peer_id = info["node"]["peer_id"]

    def start_holders(self, count: int) -> None:
        while len(self.holders) < count:
            name = f"holder{len(self.holders) + 1}-{self.tag}"
            extra = self.model_args or []
            node = self.spawn(name, extra, self.logs / "data" / name)
            self.holders.append(node)
        for h in self.holders:
            if not h.peer_id:
                self.wait_up(h, model=True)

    def start_puller(self, sources: Sequence[Node], *, reuse: Node | None = None) -> Node:
        if reuse is None:
            self.serial += 1
            name = f"puller{self.serial}-{self.tag}"
            boot = [a for h in sources for a in ("--bootstrap", h.addr)]
            node = self.spawn(name, ["--no-default-model", *boot], self.logs / "data" / name)
        else:  # the same identity, ports and data dir: a restart after kill -9
            node = self.spawn(reuse.name, reuse.argv_extra, reuse.data_dir,
                              (reuse.p2p, reuse.api_port))
        try:
            self.wait_up(node, model=False)
            self.wait_sees(node, sources)
        except RuntimeError:
            self.stop([node])
            raise
        return node

    def wait_sees(self, node: Node, sources: Sequence[Node]) -> None:
        """Until ``node`` lists every source healthy and holding the model."""
        want = {h.peer_id for h in sources}

        def sees_all() -> bool:
            doc = get_json(node.api + "/v1/peers") or {}
            ok = {p["peer_id"] for p in doc.get("peers", [])
                  if p.get("state") == "healthy" and self.model_id in p.get("models", [])}
            return want <= ok
        if not wait_until(sees_all, timeout_s=60, interval_s=0.1):
            raise RuntimeError(f"{node.name} did not see {len(want)} holder(s) with "
                               f"{self.model_id} within 60 s")

    def pulled(self, puller: Node, model_id: str | None) -> dict[str, Any]:
        """What the puller now says of the model it pulled (the id the pull's last event
        named, else ours): ``{"id", "registered", "digest"}``."""
        info = get_json(puller.api + "/v1/node/info") or {}
        models = [m.get("id") for m in info.get("models", [])]
        # the puller started with no model: the one it lists now is the one it pulled
        mid = model_id or (models[0] if len(models) == 1 else self.model_id)
        listed = local_model(info, mid)
        status = get_json(f"{puller.api}/v1/models/{mid}") or {}
        return {"id": mid, "registered": listed is not None, "digest": status.get("digest")}

    def stop(self, nodes: Sequence[Node]) -> None:
        self.group.stop([n.child for n in nodes])

    def drop_data(self, node: Node, keep: bool) -> None:
        if not keep:
            shutil.rmtree(node.data_dir, ignore_errors=True)

    def pull(self, puller: Node, *, kill_at: float | None = None, ref: str | None = None,
             senders: Sequence[Child] | None = None,
             counters: Callable[[], dict[str, int | None]] | None = None) -> dict[str, Any]:
        """One pull of ``ref`` (default the model id), timed from the request to "success";
        with ``kill_at`` (0..1), the puller is SIGKILLed once that share of the file is
        verified. CPU is counted for ``senders`` (default the holders) and the puller;
        ``counters`` is read before the request and at the kill or the end."""
        nodes = [*(senders if senders is not None else [h.child for h in self.holders]),
                 puller.child]
        # One idle second first: what the nodes burn anyway (a young node refreshes its
        # DHT every second), recorded so the transfer's own cost can be told apart.
        idle0 = cpu_of(nodes)
        time.sleep(1.0)
        cpu0 = cpu_of(nodes)
        idle = {"idle_cpu_s_per_s_send": rnd(cpu_delta(idle0[:-1], cpu0[:-1])),
                "idle_cpu_s_per_s_recv": rnd(cpu_delta(idle0[-1:], cpu0[-1:]))}
        at_start = counters() if counters else {}
        cpu0 = cpu_of(nodes)
        t0 = now()
        last: dict[str, Any] = {}
        events = resumed = 0
        try:
            for ev in pull_events(puller.api, ref or self.model_id):
                events += 1
                err = event_error(ev)
                if err:
                    return {"ok": False, "error": f"pull failed: {err}", "events": events}
                prog = event_progress(ev)
                resumed = max(resumed, int(prog.get("resumed") or 0))
                last = prog or last
                if event_done(ev):
                    break
                done = last.get("completed") or 0
                if kill_at is not None and done >= kill_at * self.size:
                    # SIGSTOP first: the byte counter read then is the last the process
                    # ever received; SIGKILL follows (no shutdown code runs either way).
                    # A moment stopped lets the sender fill what the socket buffers take:
                    # bytes sent then count as sent, though the puller never reads them.
                    signal_group(puller.child, signal.SIGSTOP)
                    killed_after = now() - t0
                    time.sleep(0.3)
                    at_kill = counters() if counters else {}
                    kill9(puller.child)
                    return {"ok": True, "killed": True, "kill_after_s": rnd(killed_after, 3),
                            "verified_at_kill": done, "events": events,
                            "counters": counter_delta(at_start, at_kill)}
            else:
                return {"ok": False, "error": "the pull's stream ended before success",
                        "events": events, "last": last}
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "events": events}
        seconds = now() - t0
        cpu1 = cpu_of(nodes)
        send = cpu_delta(cpu0[:-1], cpu1[:-1])
        recv = cpu_delta(cpu0[-1:], cpu1[-1:])
        used = [s for s in (last.get("sources") or [])
                if isinstance(s, dict) and (s.get("bytes") or 0) > 0]
        at_end = counters() if counters else {}
        info = self.pulled(puller, last.get("model"))
        # A resumed pull moves only what was not on disk yet: rates are of those bytes.
        moved = self.size - resumed
        net = {f"cpu_s_per_gb_{side}_net": rnd(per_gb(cpu - rate * seconds, moved))
               for side, cpu, rate in (("send", send, idle["idle_cpu_s_per_s_send"]),
                                       ("recv", recv, idle["idle_cpu_s_per_s_recv"]))
               if cpu is not None and rate is not None}
        return {"ok": True, **sample(moved, seconds, send, recv), **net, **idle,
                "file_bytes": self.size, "events": events, "resumed": resumed,
                "sources_used": len(used) if used else None,
                "sources": [{k: s.get(k) for k in ("label", "kind", "bytes", "state", "reason")}
                            for s in used],
                "model": info["id"], "digest": info["digest"], "registered": info["registered"],
                "counters": counter_delta(at_start, at_end)}


def blob_stats(node: Node) -> dict[str, int] | None:
    """The blob server's counters (``bytes_sent``, ``side_channel``, ``in_stream``, …)
    from the node's status document, wherever it puts them; None when it has none."""
    def find(doc: Any) -> dict[str, int] | None:
        if isinstance(doc, dict):
            if isinstance(doc.get("bytes_sent"), int):
                return {k: v for k, v in doc.items() if isinstance(v, int)}
            for value in doc.values():
                found = find(value)
                if found is not None:
                    return found
        return None
    return find(get_json(node.api + "/v1/node/status"))


def holder_bytes_sent(nodes: Sequence[Node]) -> int | None:
    """Blob bytes the holders have sent so far, when their API says (else None)."""
    stats = [blob_stats(n) for n in nodes]
    return None if any(s is None for s in stats) else sum(
        s["bytes_sent"] for s in stats if s is not None)


def tcp_acked(sender: Child, receiver: Child) -> int | None:
    """Bytes the receiver's kernel has acknowledged on every TCP connection open now from
    ``sender`` to ``receiver`` (``ss``'s bytes_acked; closed connections are not seen)."""
    try:
        ports = {c.laddr.port for c in psutil.Process(receiver.pid).net_connections("tcp")}
        out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (psutil.Error, OSError, subprocess.SubprocessError):
        return None
    total = 0
    head: list[str] = []
    for line in out.splitlines():
        if not line[:1].isspace():  # a socket's line; its details follow, indented
            head = line.split()
            continue
        mine = len(head) >= 5 and any(f"pid={sender.pid}," in c for c in head[4:])
        if mine and head[3].rpartition(":")[2].isdigit() and int(
                head[3].rpartition(":")[2]) in ports:
            acked = next((w for w in line.split() if w.startswith("bytes_acked:")), None)
            total += int(acked.split(":")[1]) if acked else 0
        head = []
    return total


def transfer_counters(holders: Sequence[Node], puller: Node) -> dict[str, int | None]:
    """Every byte counter that can tell how much crossed from the holders to the puller."""
    wchar = [io_chars(h.child)[1] for h in holders]
    tcp = [tcp_acked(h.child, puller.child) for h in holders]
    return {"holder_blob_bytes_sent": holder_bytes_sent(holders),
            "holder_wchar": None if None in wchar else sum(w or 0 for w in wchar),
            "holder_tcp_acked": None if None in tcp else sum(t or 0 for t in tcp),
            "puller_rchar": io_chars(puller.child)[0]}


def counter_delta(before: dict[str, int | None],
                  after: dict[str, int | None]) -> dict[str, int | None]:
    return {k: None if before.get(k) is None or after.get(k) is None
            else int(after[k] or 0) - int(before[k] or 0) for k in after}


def stats_delta(before: Sequence[dict[str, int] | None],
                after: Sequence[dict[str, int] | None]) -> dict[str, int] | None:
    """The holders' blob counters summed, after minus before (did the side channel carry
    the ranges, or the stream?); None when a holder has no counters."""
    if any(x is None for x in (*before, *after)):
        return None
    keys = {k for d in after if d for k in d}
    return {k: sum((a or {}).get(k, 0) - (b or {}).get(k, 0)
                   for a, b in zip(after, before, strict=True)) for k in sorted(keys)}


def partial_files(node: Node) -> list[dict[str, Any]]:
    """What a killed puller left under its models directory (names and sizes)."""
    root = node.data_dir / "models" / "blobs"
    if not root.is_dir():
        return []
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(root.iterdir())
            if ".partial" in p.name]


def check_pulled(result: dict[str, Any], digest: str | None) -> dict[str, Any]:
    """A successful pull must leave the model registered, with the file's digest when the
    node's model status shows one."""
    if not result["ok"]:
        return result
    if not result.get("registered"):
        return result | {"ok": False, "error": f"{result.get('model')} is not listed by the "
                         "puller after the pull"}
    if result.get("digest") not in (None, digest):
        return result | {"ok": False, "error": f"pulled digest {result['digest']} is not "
                         "the file's"}
    return result


def one_pull(bench: PullBench, case: Case, run: int, sources: Sequence[Node],
             keep: bool) -> None:
    try:
        puller = bench.start_puller(sources)
    except RuntimeError as exc:
        case.samples.append({"run": run, "ok": False, "error": str(exc)})
        return
    t_age = now() - puller.child.started_at
    stats0 = [blob_stats(h) for h in sources]
    result = bench.pull(puller)
    result["holders_blob_stats"] = stats_delta(stats0, [blob_stats(h) for h in sources])
    bench.stop([puller])
    bench.drop_data(puller, keep)
    case.samples.append({"run": run, "puller_age_s": rnd(t_age, 1),
                         **check_pulled(result, bench.digest)})


def refetch_measures(first: dict[str, Any], second: dict[str, Any], size: int,
                     resumed: int) -> dict[str, int | None]:
    """The bytes fetched twice, counted every way there is, the most exact first; a count
    that cannot be right (the file not even sent once) is None."""
    c1, c2 = first.get("counters") or {}, second.get("counters") or {}

    def over_both(key: str) -> int | None:
        if c1.get(key) is None or c2.get(key) is None:
            return None
        extra = int(c1[key]) + int(c2[key]) - size
        return extra if extra >= 0 else None

    rchar = c1.get("puller_rchar")
    return {
        # the holder's blob counter, when its status has one: exact
        "holder blob bytes_sent": over_both("holder_blob_bytes_sent"),
        # what the holder wrote with write(): every TLS side-channel byte, framing included;
        # trio's socket sends are not counted, so without the side channel this is None
        "holder wchar": over_both("holder_wchar"),
        # bytes acked on the holder->puller connections open at the readings: the libp2p
        # connection (framing included); side channels closed before a reading are missed
        "holder tcp bytes_acked": over_both("holder_tcp_acked"),
        # what the killed puller had read with read() and the restart did not keep
        "puller rchar - resumed": None if rchar is None or rchar < first["verified_at_kill"]
        else int(rchar) - resumed,
        # verified at the last progress event before the kill and not kept: a lower bound
        "verified at kill - resumed": max(0, int(first["verified_at_kill"]) - resumed)}


def one_resume(bench: PullBench, case: Case, run: int, kill_at: float, keep: bool) -> None:
    src = bench.holders[:1]
    try:
        puller = bench.start_puller(src)
    except RuntimeError as exc:
        case.samples.append({"run": run, "ok": False, "error": str(exc)})
        return
    first = bench.pull(puller, kill_at=kill_at,
                       counters=lambda: transfer_counters(src, puller))
    if not first.get("killed"):
        bench.stop([puller])
        bench.drop_data(puller, keep)
        case.samples.append({"run": run, "ok": False, "first": first,
                             "error": first.get("error") or "the pull ended before the kill"})
        return
    left = partial_files(puller)
    t_restart = now()
    try:
        again = bench.start_puller(src, reuse=puller)
    except RuntimeError as exc:
        case.samples.append({"run": run, "ok": False, "first": first, "error": str(exc)})
        return
    t_ready = now()
    second = check_pulled(bench.pull(again, counters=lambda: transfer_counters(src, again)),
                          bench.digest)
    bench.stop([again])
    bench.drop_data(again, keep)
    sample_: dict[str, Any] = {"run": run, "ok": bool(second["ok"]), "first": first,
                               "left_on_disk": left, "second": second,
                               "restart_to_ready_s": rnd(t_ready - t_restart, 3)}
    if second["ok"]:
        resumed = int(second.get("resumed") or 0)
        measures = refetch_measures(first, second, bench.size, resumed)
        source, refetched = next((k, v) for k, v in measures.items() if v is not None)
        sample_ |= {"resume_seconds": second["seconds"],
                    "restart_to_done_seconds": rnd(t_ready - t_restart + second["seconds"], 3),
                    "resumed_bytes": resumed, "refetched_measures": measures,
                    "refetched_bytes": refetched, "refetched_source": source,
                    "refetched_chunks": rnd(refetched / bench.chunk_bytes, 2)
                    if bench.chunk_bytes else None,
                    "mb_s": second.get("mb_s"),
                    "cpu_s_per_gb_send": second.get("cpu_s_per_gb_send"),
                    "cpu_s_per_gb_recv": second.get("cpu_s_per_gb_recv")}
    else:
        sample_["error"] = second.get("error")
    case.samples.append(sample_)


def pull_cases(group: ProcessGroup, logs: Path, file: Path, *, size: int, digest: str,
               runs: int,
               model_args: list[str], model_id: str, side_channels: Sequence[bool],
               kill_at: float, chunk_bytes: int | None, keep: bool,
               settle_s: float) -> list[Case]:
    """Per side-channel value: three holders that do not know each other, ``settle_s`` old
    (a node refreshes its DHT every second for its first 30 s, which the senders' CPU would
    count); 1-source pulls and resumes from holder 1 (its pullers know only it, and it knows
    no other holder), then 3-source pulls from all three."""
    cases: list[Case] = []
    for sc in side_channels:
        bench = PullBench(group, logs, sc, model_args, model_id, size, chunk_bytes, digest)
        cfg = {"side_channel": sc, "model": model_id, "holders_settle_s": settle_s}
        one = Case(f"pull-1src-{bench.tag}", "pull", cfg | {"sources": 1})
        res = Case(f"resume-1src-{bench.tag}", "resume", cfg | {"sources": 1,
                                                                "kill_at_share": kill_at})
        three = Case(f"pull-3src-{bench.tag}", "pull", cfg | {"sources": 3})
        cases += [one, res, three]
        try:
            bench.start_holders(3)
        except RuntimeError as exc:
            for c in (one, res, three):
                c.error = f"holders did not start: {exc}"
            bench.stop(bench.holders)
            continue
        youngest = max(h.child.started_at for h in bench.holders)
        time.sleep(max(0.0, settle_s - (now() - youngest)))
        for i in range(runs):
            announce(one, i, runs)
            one_pull(bench, one, i, bench.holders[:1], keep)
            print(" " + brief(one.samples[-1]))
        for i in range(runs):
            announce(res, i, runs)
            one_resume(bench, res, i, kill_at, keep)
            print(" " + brief(res.samples[-1]))
        for i in range(runs):
            announce(three, i, runs)
            one_pull(bench, three, i, bench.holders, keep)
            print(" " + brief(three.samples[-1]))
        bench.stop(bench.holders)
    return cases


def http_up(url: str) -> bool:
    try:
        return httpx.get(url.rsplit("/", 1)[0] + "/ping", trust_env=False, timeout=2).is_success
    except httpx.HTTPError:
        return False


def start_http_server(group: ProcessGroup, logs: Path, name: str,
                      file: Path) -> tuple[Child, str]:
    """An http-send child serving ``file``, once it answers; returns it and the file's URL."""
    (port,) = free_ports(1)
    server, ctl = spawn_role(group, logs, name, "http-send", {"file": str(file), "port": port})
    url: str = wait_file(ctl / "ready.json", server, 60)["url"]
    if not wait_until(lambda: http_up(url), timeout_s=30):
        raise RuntimeError(f"{name} did not answer within 30 s")
    return server, url


def url_pull_case(bench: PullBench, file: Path, runs: int, keep: bool) -> Case:
    """``peerllm pull http://…`` from the same local HTTP server as the http case."""
    case = Case("pull-url", "pull", {"server": "hypercorn + starlette FileResponse",
                                     "sources": 1})
    try:
        server, url = start_http_server(bench.group, bench.logs, "pull-url-server", file)
    except RuntimeError as exc:
        case.error = f"could not start the HTTP server: {exc}"
        return case
    for i in range(runs):
        announce(case, i, runs)
        try:
            puller = bench.start_puller([])
        except RuntimeError as exc:
            case.samples.append({"run": i, "ok": False, "error": str(exc)})
        else:
            result = bench.pull(puller, ref=url, senders=[server])
            bench.stop([puller])
            bench.drop_data(puller, keep)
            case.samples.append({"run": i, **check_pulled(result, bench.digest)})
        print(" " + brief(case.samples[-1]))
    bench.group.stop([server])
    return case


def announce(case: Case, i: int, runs: int) -> None:
    print(f"  run {i + 1}/{runs}: {case.name} …", end="", flush=True)


def brief(s: dict[str, Any]) -> str:
    if not s["ok"]:
        return f"failed: {s.get('error')}"
    if "resume_seconds" in s:
        return (f"resumed in {s['resume_seconds']:.2f} s ({s['restart_to_done_seconds']:.2f} s "
                f"from restart), {s['refetched_bytes']} B fetched twice")
    return f"{s.get('mb_s')} MB/s"


# =========================================================================== summary


def log_scan(logs: Path) -> dict[str, dict[str, Any]]:
    """WARNING / ERROR / Traceback lines per child log (the first few kept verbatim)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(logs.glob("*.log")):
        hits = [line for line in path.read_text(errors="replace").splitlines()
                if any(k in line for k in (" WARNING ", " ERROR ", "Traceback"))]
        if hits:
            out[path.stem] = {"lines": len(hits), "first": [h[:300] for h in hits[:5]]}
    return out


def mm(case: Case, key: str, digits: int = 1) -> str:
    """'median (min–max)' of ``key`` over the case's good samples."""
    xs = [float(s[key]) for s in case.samples if s.get("ok") and s.get(key) is not None]
    if not xs:
        return "–"
    med = median(xs)
    if len(xs) == 1:
        return fmt(med, digits=digits)
    return f"{fmt(med, digits=digits)} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def at_least(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value >= limit else "MISS"


def targets(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """The issue's targets, per side-channel setting, each with its verdict."""
    by = {c.name: c for c in cases}
    rows: list[dict[str, Any]] = []

    def row(target: str, case: Case | None, value: float | None, verdict_: str,
            unit: str) -> None:
        why = None if case is None else case.error
        if value is None and why is None:
            why = "no successful run" if case is not None else "case not run"
        rows.append({"target": target, "case": case.name if case else None,
                     "value": rnd(value, 2), "unit": unit, "verdict": verdict_, "why_na": why})

    for tag in ("sc-on", "sc-off"):
        one, three = by.get(f"pull-1src-{tag}"), by.get(f"pull-3src-{tag}")
        res = by.get(f"resume-1src-{tag}")
        if one is None and three is None and res is None:
            continue
        v1 = one.med("mb_s") if one else None
        v3 = three.med("mb_s") if three else None
        row(f"[{tag}] pull from 1 source ≥ {PULL_MBPS_TARGET:.0f} MB/s", one, v1,
            at_least(v1, PULL_MBPS_TARGET), "MB/s")
        row(f"[{tag}] pull from 3 sources > from 1 source", three, v3,
            "n/a" if v1 is None or v3 is None else ("PASS" if v3 > v1 else "MISS"), "MB/s")
        for case in (one, three):
            for side in ("send", "recv"):
                v = case.med(f"cpu_s_per_gb_{side}") if case else None
                row(f"[{tag}] {case.name if case else tag}: CPU per GB, "
                    f"{'senders' if side == 'send' else 'receiver'} ≤ {CPU_S_PER_GB_TARGET:.0f} s",
                    case, v, "n/a" if v is None else ("PASS" if v <= CPU_S_PER_GB_TARGET
                                                      else "MISS"), "s/GB")
        worst = None
        if res is not None:
            xs = [s["refetched_chunks"] for s in res.samples
                  if s.get("ok") and s.get("refetched_chunks") is not None]
            worst = max(xs) if xs else None
        row(f"[{tag}] chunks fetched twice per resume ≤ {REFETCH_CHUNKS_TARGET:.0f} (worst run)",
            res, worst, "n/a" if worst is None else ("PASS" if worst <= REFETCH_CHUNKS_TARGET
                                                     else "MISS"), "chunks")
    return rows


def print_summary(doc: dict[str, Any], cases: Sequence[Case]) -> None:
    cfg = doc["config"]
    print(f"\nfile: {cfg['file']} ({cfg['size_bytes'] / 1e6:.1f} MB, {cfg['digest']}), "
          f"{cfg['runs']} run(s); median (min–max)")
    rows = []
    for c in cases:
        if c.error:
            rows.append([c.name, "–", "–", "–", f"not run: {c.error}"[:90]])
            continue
        bad = sum(1 for s in c.samples if not s.get("ok"))
        note = f"{bad} run(s) failed" if bad else ""
        if c.group == "resume":
            note = (f"resume {mm(c, 'resume_seconds', 2)} s, restart→done "
                    f"{mm(c, 'restart_to_done_seconds', 2)} s, fetched twice "
                    f"{mm(c, 'refetched_bytes', 0)} B {note}")
        elif c.group == "pull":
            note = f"sources used {mm(c, 'sources_used', 0)} {note}"
        rows.append([c.name, mm(c, "mb_s"), mm(c, "cpu_s_per_gb_send", 2),
                     mm(c, "cpu_s_per_gb_recv", 2), note.strip()])
    print(table(rows, ["case", "MB/s", "CPU s/GB send", "CPU s/GB recv", "notes"]))
    trows = [[t["target"], fmt(t["value"]), t["verdict"], (t["why_na"] or "")[:70]]
             for t in doc["targets"]]
    if trows:
        print("\ntargets (issue #13; a resume's MB/s and CPU are of the second pull only)")
        print(table(trows, ["target", "value", "verdict", "why n/a"]))
    if doc["log_scan"]:
        print("\nWARNING/ERROR/Traceback lines in the logs: " + ", ".join(
            f"{name} {v['lines']}" for name, v in doc["log_scan"].items()))


# =========================================================================== main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    ap.add_argument("--size-mb", type=int, default=None,
                    help="a random file of N MB (10^6 B) instead of the bundled model")
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help=f"comma-separated subset of {','.join(ALL_CASES)}")
    ap.add_argument("--side-channel", choices=("both", "on", "off"), default="both",
                    help="pull cases with models.side_channel on, off, or both (default)")
    ap.add_argument("--kill-at", type=float, default=0.5,
                    help="share of the file verified when the puller is killed (default 0.5)")
    ap.add_argument("--settle", type=float, default=32.0,
                    help="seconds the holders run before the first pull (default 32: past "
                         "a node's first 30 s of DHT refreshes)")
    ap.add_argument("--src", type=Path, default=REPO_ROOT / "src",
                    help="the peerllm source tree the children run (default this checkout's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the temp dir (logs, data dirs, pulled files)")
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - set(ALL_CASES)
    if unknown or args.runs < 1 or not 0 < args.kill_at < 1:
        ap.error(f"bad --cases {sorted(unknown)}" if unknown else
                 "--runs must be ≥ 1 and --kill-at in (0, 1)")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    CHILD_SRC[0] = args.src.resolve()
    slug = timestamp_slug()
    logs = Path(tempfile.mkdtemp(prefix=f"peerllm-transfer-{slug}-"))
    machine = machine_info()
    print(f"logs and data in {logs}")
    if args.size_mb:
        file, model_id = random_file(logs, args.size_mb), RANDOM_MODEL_ID
    else:
        file, model_id = bundled_model(logs), MODEL_ID
    # Holders serve it as a model file: its path (and so its digest) is known from the start,
    # which the bundled default's is not until it is first loaded.
    model_args = ["--no-default-model", "--model", str(file)]
    size = file.stat().st_size
    digest = sha256_of(file)
    manifest = precompute_manifest(file) if {"pull", "url"} & set(args.cases) else {}
    chunk_bytes = int(manifest.get("chunk_bytes") or 0) or None
    sides = {"both": [True, False], "on": [True], "off": [False]}[args.side_channel]
    config = {"file": str(file), "size_bytes": size, "digest": digest, "runs": args.runs,
              "cases": args.cases, "kill_at_share": args.kill_at,
              "manifest": manifest, "src": str(CHILD_SRC[0]),
              "logs_dir": str(logs)}
    cases: list[Case] = []
    failed = True
    try:
        with managed_processes() as group:
            simple = [c for c in args.cases if c in ("disk", "tcp", "libp2p", "http")]
            if simple:
                print(f"one process to another: {', '.join(simple)}")
                cases += simple_cases(group, logs, file, size, args.runs, simple)
            if "pull" in args.cases:
                print(f"pull ({args.side_channel} side channel)")
                cases += pull_cases(group, logs, file, size=size, digest=digest, runs=args.runs,
                                    model_args=model_args, model_id=model_id,
                                    side_channels=sides, kill_at=args.kill_at,
                                    chunk_bytes=chunk_bytes, keep=args.keep_logs,
                                    settle_s=args.settle)
            if "url" in args.cases:
                print("pull from a URL")
                bench = PullBench(group, logs, True, model_args, model_id, size, chunk_bytes,
                                  digest, tag="url")
                cases.append(url_pull_case(bench, file, args.runs, args.keep_logs))
        failed = False
    finally:
        for case in cases:
            if case.error is None and case.samples and not any(x["ok"] for x in case.samples):
                case.error = "every run failed: " + str(case.samples[-1].get("error"))
        doc = {"benchmark": "transfer", "machine": machine, "config": config,
               "cases": [c.doc() for c in cases], "targets": targets(cases),
               "log_scan": log_scan(logs), "interrupted": failed}
        path = write_results(args.out, "transfer", doc, slug)
        if not failed:
            print_summary(doc, cases)
        print(f"\nresults: {path}")
        trouble = any(c.error or any(not x.get("ok") for x in c.samples) for c in cases)
        if args.keep_logs or failed or trouble:
            print(f"logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
