"""Connect and refusal times on the wire: open network, private network (pnet), and a
peer of another network refused by the first-bytes check (p2p/transport.py).

Two libp2p hosts in this process on 127.0.0.1 (open_host, as a node builds them), a fresh
pair per sample so every connect is a first connect: TCP, (pnet nonces), multistream,
Noise, Yamux. For each pairing it times ``connect`` from the call to its return, or to
NetworkKeyMismatch for a pairing that must be refused (the promise: well under 2 s; before
#11 py-libp2p's PSK alone took 30-40 s). Medians and p95 are printed; JSON with every
sample goes to scripts/bench/results/network_check-<timestamp>.json.

    python scripts/bench/network_check.py --runs 20
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    fmt,
    free_ports,
    machine_info,
    median,
    percentile,
    summarize,
    table,
    timestamp_slug,
    verdict,
    write_results,
)

from peerllm.errors import NetworkKeyMismatch
from peerllm.p2p.host import open_host
from peerllm.testing import make_identity

K1, K2 = "11" * 32, "22" * 32
PAIRINGS: dict[str, tuple[str | None, str | None, bool]] = {
    # name: (listener's key, dialler's key, must connect)
    "open -> open": (None, None, True),
    "private -> same key": (K1, K1, True),
    "private -> other key": (K1, K2, False),
    "open -> private": (None, K1, False),
    "private -> open": (K1, None, False),
}
REFUSAL_LIMIT_S = 2.0


async def one(listen_key: str | None, dial_key: str | None, must_connect: bool) -> float:
    port_a, port_b = free_ports(2)
    async with open_host(make_identity("a"), listen=[f"/ip4/127.0.0.1/tcp/{port_a}"],
                         network_key=listen_key) as a, \
            open_host(make_identity("b"), listen=[f"/ip4/127.0.0.1/tcp/{port_b}"],
                      network_key=dial_key) as b:
        start = time.perf_counter()
        with trio.fail_after(60):
            try:
                await b.connect(a.peer_id, a.addrs())
            except NetworkKeyMismatch:
                if must_connect:
                    raise
            else:
                if not must_connect:
                    raise AssertionError("a peer of another network was let in")
        return time.perf_counter() - start


async def run(runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in PAIRINGS}
    await one(None, None, True)  # warm-up: imports, first sockets
    for _ in range(runs):
        for name, (listen_key, dial_key, must_connect) in PAIRINGS.items():
            samples[name].append(await one(listen_key, dial_key, must_connect))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="samples per pairing")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args()
    # The refusals' WARNINGs (and py-libp2p's ERRORs as hosts close) are not the output.
    logging.disable(logging.ERROR)
    samples = trio.run(run, args.runs)
    rows, summary = [], {}
    for name, values in samples.items():
        ms = [v * 1000 for v in values]
        summary[name] = summarize(ms)
        refused = not PAIRINGS[name][2]
        rows.append([name, "refused" if refused else "connected", fmt(median(ms), " ms"),
                     fmt(percentile(ms, 95), " ms"), fmt(max(ms), " ms"),
                     verdict(max(values), REFUSAL_LIMIT_S) if refused else ""])
    doc: dict[str, Any] = {"bench": "network_check", "runs": args.runs, "summary_ms": summary,
                           "samples_s": samples, "machine": machine_info()}
    path = write_results(args.out, "network_check", doc, timestamp_slug())
    print(table(rows, ["pairing", "outcome", "median", "p95", "max",
                       f"refusal <= {REFUSAL_LIMIT_S:.0f} s"]))
    print(f"\nraw samples: {path}")


if __name__ == "__main__":
    main()
