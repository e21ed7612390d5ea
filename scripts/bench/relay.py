"""Circuit relay cost on loopback: the same things done direct and through a relay.

Four nodes on 127.0.0.1: R relays (a ``peerllm node --relay-service on`` process), C
serves the bundled model and holds a reservation on R (a ``peerllm node`` process with
``p2p.reachability: private`` and ``--relay R``), and in this process A reaches C
directly at its TCP address while B reaches C only at its circuit address through R.
R and C are processes of their own so that the relay's copying and the model's work do
not share the clients' event loop. Runs are interleaved (direct, relayed, relayed,
direct, ...) so machine noise hits both alike, and medians are reported side by side:

  * connect: ``P2PHost.connect`` from nothing to a secured, muxed connection (the
    relayed one includes B's failed direct attempt: it knows no direct address);
  * node-info RPC: one signed ``/peerllm/node-info/1.0.0`` round trip on a warm stream;
  * generation: TTFT and tokens/s of a greedy completion served by C's real model
    (skip with ``--no-model``).

    python scripts/bench/relay.py --runs 7 --tokens 64

JSON with every sample goes to scripts/bench/results/relay-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    ProcessGroup,
    clean_env,
    fmt,
    free_ports,
    machine_info,
    managed_processes,
    median,
    table,
    timestamp_slug,
    write_results,
)

import peerllm
from peerllm.config import config_from_mapping
from peerllm.events import TokenChunk
from peerllm.inference.catalog import DEFAULT_MODEL_ID
from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams
from peerllm.node import Node
from peerllm.p2p.registry import Source

PROMPT = "Write one sentence about the sea."
START_TIMEOUT_S = 120.0


def config(root: Path, name: str) -> peerllm.NodeConfig:
    return config_from_mapping({
        "data_dir": str(root / name), "node": {"name": name},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "dial_timeout_s": 5.0},
        "discovery": {"mdns": False, "dht": False}, "models": {"serve_default": False},
    })


def get_json(url: str) -> Any | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


async def wait_json(url: str, done: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        doc = await trio.to_thread.run_sync(get_json, url)
        if doc is not None and done(doc):
            return doc
        await trio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what} ({url})")


async def start_node(group: ProcessGroup, root: Path, name: str, extra: Sequence[str],
                     yaml: str) -> tuple[str, str]:
    """Start ``peerllm node`` ``name``; return its API URL and its first address."""
    p2p_port, api_port = free_ports(2)
    (root / f"{name}.yaml").write_text(yaml)
    argv = [sys.executable, "-m", "peerllm", "node", "--data-dir", str(root / name),
            "--name", name, "--listen", f"/ip4/127.0.0.1/tcp/{p2p_port}", "--no-dht",
            "--api", f"127.0.0.1:{api_port}", "--no-mdns", "--config",
            str(root / f"{name}.yaml"), *extra]
    group.spawn(name, argv, root / f"{name}.log", env=clean_env())
    api = f"http://127.0.0.1:{api_port}"
    info = await wait_json(f"{api}/v1/node/info", lambda d: bool(d), f"{name} to start")
    return api, info["network"]["addrs"][0]


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000


async def fresh_connect(node: Node, peer: str, addrs: Sequence[str]) -> float:
    """Connect time from no connection and no remembered address."""
    from libp2p.peer.id import ID

    await node.host.disconnect(peer)
    while node.host.is_connected(peer):
        await trio.sleep(0.01)
    node.host.libp2p.get_peerstore().clear_addrs(ID.from_base58(peer))
    return await timed(lambda: node.host.connect(peer, addrs))


async def generate(node: Node, tokens: int) -> dict[str, float | None]:
    req = GenerationRequest(model=DEFAULT_MODEL_ID,
                            messages=(ChatMessage(role="user", content=PROMPT),),
                            params=SamplingParams(max_tokens=tokens, temperature=0.0, seed=1))
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with node.open_generation(req) as routed:
        async for ev in routed.events():
            if isinstance(ev, TokenChunk) and ev.text:
                stamps.append(time.perf_counter())
    ttft = (stamps[0] - t0) * 1000 if stamps else None
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 else None
    return {"ttft_ms": ttft, "tokens_per_s": rate, "chunks": len(stamps)}


async def bench(args: argparse.Namespace, root: Path, group: ProcessGroup) -> dict[str, Any]:
    _r_api, relay = await start_node(group, root, "r", ["--relay-service", "on",
                                                        "--no-default-model"], "{}\n")
    # Node-info is rate-limited per peer (10/s by default); the bench asks faster.
    c_api, direct_addr = await start_node(
        group, root, "c", ["--relay", relay, *(["--no-default-model"] if args.no_model else [])],
        "p2p:\n  reachability: private\n  peer_info_requests_per_s: 10000\n")
    status = await wait_json(f"{c_api}/v1/node/status",
                             lambda d: bool((d.get("relay") or {}).get("reservations")),
                             "C's reservation on R")
    c_peer = status["peer_id"]
    async with peerllm.open_node(config(root, "a")) as a, \
            peerllm.open_node(config(root, "b")) as b:
        direct = [direct_addr]
        circuit = f"{relay}/p2p-circuit/p2p/{c_peer}"
        paths = {"direct": (a, direct), "relayed": (b, [circuit])}
        samples: dict[str, dict[str, list[Any]]] = {
            p: {"connect_ms": [], "node_info_ms": [], "generation": []} for p in paths}
        for _ in range(args.runs):
            for name, (node, addrs) in paths.items():
                samples[name]["connect_ms"].append(
                    await fresh_connect(node, c_peer, addrs))
        for node, addrs in paths.values():
            await node.membership.connect_peer(c_peer, addrs, Source.DHT)
            await node.membership.info_client.fetch(c_peer)  # warm the stream
        relayed_ok = any("/p2p-circuit" in str(t) for t in _transport(b, c_peer))
        for _ in range(args.runs * 3):
            for name, (node, _addrs) in paths.items():
                samples[name]["node_info_ms"].append(await timed(
                    lambda node=node: node.membership.info_client.fetch(c_peer)))
        if not args.no_model:
            for node, _addrs in paths.values():
                await generate(node, 4)  # warm-up
            for run in range(args.runs):  # who goes first alternates
                for name in sorted(paths, reverse=bool(run % 2)):
                    node = paths[name][0]
                    samples[name]["generation"].append(await generate(node, args.tokens))
        return {"relayed_connection_checked": relayed_ok, "samples": samples}


def _transport(node: Node, peer: str) -> list[str]:
    from libp2p.peer.id import ID

    conns = node.host.libp2p.get_network().connections.get(ID.from_base58(peer)) or []
    return [str(t) for conn in conns for t in conn.get_transport_addresses()]


def summary(samples: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for path, s in samples.items():
        gen = s["generation"]
        out[path] = {"connect_ms": median(s["connect_ms"]),
                     "node_info_ms": median(s["node_info_ms"]),
                     "ttft_ms": median([g["ttft_ms"] for g in gen]),
                     "tokens_per_s": median([g["tokens_per_s"] for g in gen])}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--no-model", action="store_true", help="skip the generation runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="peerllm-relay-bench-") as tmp, \
            managed_processes() as group:
        try:
            result = trio.run(bench, args, Path(tmp), group)
        finally:
            group.stop_all()
    med = summary(result["samples"])
    doc = {"bench": "relay", "machine": machine_info(), "runs": args.runs,
           "tokens": args.tokens, "medians": med, **result}
    path = write_results(args.out, "relay", doc, timestamp_slug())
    d, r = med["direct"], med["relayed"]
    rows = [[label, fmt(d[key], unit), fmt(r[key], unit),
             fmt(r[key] / d[key] if d[key] and r[key] else None, "x")]
            for label, key, unit in (("connect", "connect_ms", " ms"),
                                     ("node-info RPC", "node_info_ms", " ms"),
                                     ("TTFT", "ttft_ms", " ms"),
                                     ("tokens/s", "tokens_per_s", ""))]
    print(table(rows, ["median over runs", "direct", "relayed", "relayed/direct"]))
    print(f"relayed path really went through the relay: {result['relayed_connection_checked']}")
    print(f"raw samples: {path}")
    return 0 if result["relayed_connection_checked"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
