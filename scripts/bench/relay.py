"""Circuit relay cost on loopback: the same things done direct and through a relay.

Four nodes in this process on 127.0.0.1: R relays (``relay_service: on``), C serves the
bundled model and holds a reservation on R (``reachability: private``), A reaches C
directly at its TCP address, B reaches C only at its circuit address through R. Runs
are interleaved (direct, relayed, direct, ...) so machine noise hits both alike, and
medians are reported side by side:

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
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    fmt,
    machine_info,
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


def config(root: Path, name: str, *, model: bool = False, **p2p: Any) -> peerllm.NodeConfig:
    return config_from_mapping({
        "data_dir": str(root / name), "node": {"name": name},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "dial_timeout_s": 5.0, **p2p},
        "discovery": {"mdns": False, "dht": False},
        "models": {"serve_default": model},
    })


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


async def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    async with peerllm.open_node(config(root, "r", relay_service="on")) as r:
        relay = r.addrs()[0]
        # Node-info is rate-limited per peer (10/s by default); the bench asks faster.
        c_cfg = config(root, "c", model=not args.no_model, reachability="private",
                       relays=[relay], peer_info_requests_per_s=10_000)
        async with peerllm.open_node(c_cfg) as c, \
                peerllm.open_node(config(root, "a")) as a, \
                peerllm.open_node(config(root, "b")) as b:
            with trio.fail_after(30):
                while not (c.relays and c.relays.held):
                    await trio.sleep(0.05)
            direct = [x for x in c.addrs() if "/p2p-circuit" not in x][:1]
            circuit = f"{relay}/p2p-circuit/p2p/{c.peer_id}"
            paths = {"direct": (a, direct), "relayed": (b, [circuit])}
            samples: dict[str, dict[str, list[Any]]] = {
                p: {"connect_ms": [], "node_info_ms": [], "generation": []} for p in paths}
            for _ in range(args.runs):
                for name, (node, addrs) in paths.items():
                    samples[name]["connect_ms"].append(
                        await fresh_connect(node, c.peer_id, addrs))
            for node, addrs in paths.values():
                await node.membership.connect_peer(c.peer_id, addrs, Source.DHT)
                await node.membership.info_client.fetch(c.peer_id)  # warm the stream
            relayed_ok = any("/p2p-circuit" in str(t) for t in _transport(b, c.peer_id))
            for _ in range(args.runs * 3):
                for name, (node, _addrs) in paths.items():
                    samples[name]["node_info_ms"].append(await timed(
                        lambda node=node: node.membership.info_client.fetch(c.peer_id)))
            if not args.no_model:
                for node, _addrs in paths.values():
                    await generate(node, 4)  # warm-up
                for _ in range(args.runs):
                    for name, (node, _addrs) in paths.items():
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
    with tempfile.TemporaryDirectory(prefix="peerllm-relay-bench-") as tmp:
        result = trio.run(bench, args, Path(tmp))
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
