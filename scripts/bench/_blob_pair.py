"""One model file between two real P2PHosts in two processes, over /peerllm/blob.

Reusable by scripts/bench/transfer.py: ``measure(file, side_channel=...)`` starts a
serving process (host A + BlobServer over a StaticBlobCatalog of ``file``), then a
fetching process (host B + BlobClient) that fetches the whole file once and throws the
bytes away (no hashing: the transfer alone). It returns MB/s (10^6 B/s) and user+sys CPU
seconds per 10^9 bytes on each side, measured around the fetch only.

Run directly for a quick look (256 MiB, each path once):

    python scripts/bench/_blob_pair.py [--mib 256] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import free_ports, wait_until  # noqa: E402


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _serve(file: Path, port: int, side_channel: bool, ready: Path) -> None:
    import trio

    from peerllm.p2p.blob import BlobServer
    from peerllm.p2p.host import open_host
    from peerllm.testing import StaticBlobCatalog, blob_entry, make_identity
    from peerllm.wire import blob as wb

    entry = blob_entry(file)

    async def main() -> None:
        async with open_host(make_identity("bench-a"), listen=[f"/ip4/127.0.0.1/tcp/{port}"]
                             ) as host:
            server = BlobServer(catalog=StaticBlobCatalog([entry]), may_download=lambda p: True,
                                max_streams_per_peer=4, upload_limit_bps=None,
                                side_channel=side_channel, side_channel_host="127.0.0.1",
                                self_peer_id=host.peer_id)
            host.set_handler(wb.PROTOCOL_ID, server.handle)
            tmp = ready.with_suffix(".tmp")
            tmp.write_text(json.dumps({"addr": host.addrs()[0], "peer_id": host.peer_id,
                                       "digest": entry.manifest.digest}))
            tmp.rename(ready)
            await trio.sleep_forever()

    trio.run(main)


def _fetch(addr: str, digest: str, side_channel: bool, port: int) -> None:
    import trio

    from peerllm.p2p.blob import BlobClient
    from peerllm.p2p.host import open_host
    from peerllm.testing import make_identity

    async def main() -> dict[str, Any]:
        async with open_host(make_identity("bench-b"), listen=[f"/ip4/127.0.0.1/tcp/{port}"]
                             ) as host:
            peer = await host.connect_addr(addr)
            client = BlobClient(host, side_channel=side_channel)
            source = client.source(peer, digest)
            m = await source.manifest()
            got = 0

            async def deliver(index: int, data: bytes) -> None:
                nonlocal got
                got += len(data)

            me = psutil.Process()
            cpu0, t0 = _cpu(me), time.perf_counter()
            await source.fetch(0, m.count, chunk_bytes=m.chunk_bytes, size=m.size,
                               deliver=deliver)
            seconds, cpu = time.perf_counter() - t0, _cpu(me) - cpu0
            assert got == m.size, (got, m.size)
            return {"bytes": got, "seconds": seconds, "client_cpu_s": cpu}

    print(json.dumps(trio.run(main)))


def measure(file: Path, *, side_channel: bool, workdir: Path) -> dict[str, Any]:
    """One fetch of ``file`` between two fresh processes (see the module docstring)."""
    port_a, port_b = free_ports(2)
    ready = workdir / f"ready-{port_a}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flag = "--side-channel" if side_channel else "--in-stream"
    server = subprocess.Popen([sys.executable, __file__, "serve", str(file), str(port_a), flag,
                               str(ready)], env=env, start_new_session=True)
    try:
        if not wait_until(ready.exists, timeout_s=60):
            raise RuntimeError("the serving process did not start within 60 s")
        info = json.loads(ready.read_text())
        proc = psutil.Process(server.pid)
        cpu0 = _cpu(proc)
        out = subprocess.run([sys.executable, __file__, "fetch", info["addr"], info["digest"],
                              str(port_b), flag], env=env, check=True, capture_output=True,
                             text=True, timeout=600)
        server_cpu = _cpu(proc) - cpu0
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
    got = json.loads(out.stdout.strip().splitlines()[-1])
    gb = got["bytes"] / 1e9
    return {"path": "side_channel" if side_channel else "in_stream", "bytes": got["bytes"],
            "seconds": round(got["seconds"], 3),
            "mb_per_s": round(got["bytes"] / got["seconds"] / 1e6, 1),
            "client_cpu_s_per_gb": round(got["client_cpu_s"] / gb, 2),
            # the server's CPU includes the fetching process's start-up (idle for A)
            "server_cpu_s_per_gb": round(server_cpu / gb, 2)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "--side-channel",
               Path(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "fetch":
        _fetch(sys.argv[2], sys.argv[3], sys.argv[5] == "--side-channel", int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--path", choices=["both", "in_stream", "side_channel"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blob-pair-") as tmp:
        file = Path(tmp) / "model.bin"
        with file.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1024 * 1024))
        for _ in range(args.runs):
            for side in (False, True):
                if args.path != "both" and (args.path == "side_channel") != side:
                    continue
                print(json.dumps(measure(file, side_channel=side, workdir=Path(tmp))),
                      flush=True)


if __name__ == "__main__":
    main()
