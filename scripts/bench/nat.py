"""NAT traversal cost inside real network namespaces (tests/netlab.py): how long a node
behind a NAT takes to become reachable through a relay, and what a connection costs
direct vs through the relay.

Topology per run: a public relay R (198.51.100.2, ``relay_service: on``), node B behind
masquerading NAT 1 (10.0.1.2) serving nothing, node A behind NAT 2 (10.0.2.2). Every
node is a process in its own namespace (tests/netlab_node.py, FakeBackend), hole
punching off so a relayed connection stays relayed. Per run:

  * B's start to "reachable via relay": from spawning B's process to its first circuit
    address (AutoNAT verdict "private", then a reservation on R), and the same from B's
    "ready" (the node up, its imports paid);
  * connect: A's fresh ``P2PHost.connect`` to R (direct, out through A's NAT) and to B
    (through R at B's circuit address), interleaved, ``--connects`` each, disconnecting
    in between.

Needs root, ``ip`` and ``nft`` (it says so and exits 2 otherwise).

    sudo python scripts/bench/nat.py --runs 3 --connects 5

JSON with every sample goes to scripts/bench/results/nat-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common import (
    DEFAULT_RESULTS_DIR,
    fmt,
    machine_info,
    median,
    table,
    timestamp_slug,
    write_results,
)
from tests.netlab import netlab_problem, open_lab
from tests.netlab_node import NetNode

POLL_S = 0.1
READY_TIMEOUT_S = 120.0


def wait_circuit(node: NetNode, relay: NetNode) -> float:
    """Poll ``node`` until it advertises a circuit address through ``relay``; the time."""
    deadline = time.perf_counter() + READY_TIMEOUT_S
    marker = f"/p2p/{relay.peer_id}/p2p-circuit"
    while time.perf_counter() < deadline:
        if any(marker in a for a in node.ask("state")["addrs"]):
            return time.perf_counter()
        time.sleep(POLL_S)
    raise RuntimeError(f"{node.name} held no slot on the relay after {READY_TIMEOUT_S} s")


def one_run(root: Path, connects: int) -> dict[str, Any]:
    with open_lab("bench") as lab:
        made: list[NetNode] = []
        try:
            relay = NetNode.start(lab.public_host("r"), root / "r", "relay",
                                  relay_service="on", reachability="public", hole_punch=False)
            made.append(relay)
            b_host = lab.private_host("b", lab.nat("n1"))
            spawned = time.perf_counter()
            bob = NetNode.start(b_host, root / "b", "bob", bootstrap=[relay.addr],
                                hole_punch=False)
            made.append(bob)
            ready = time.perf_counter()
            reachable = wait_circuit(bob, relay)
            circuit = next(a for a in bob.ask("state")["addrs"] if "/p2p-circuit" in a)
            alice = NetNode.start(lab.private_host("a", lab.nat("n2")), root / "a", "alice",
                                  hole_punch=False)
            made.append(alice)
            direct: list[float] = []
            relayed: list[float] = []
            for _ in range(connects):
                for addr, peer, out in ((relay.addr, relay.peer_id, direct),
                                        (circuit, bob.peer_id, relayed)):
                    out.append(float(alice.ask("connect", addr=addr)["seconds"]))
                    alice.ask("disconnect", peer=peer)
                    if peer == bob.peer_id:  # the circuit also needs A's link to R: fresh too
                        alice.ask("disconnect", peer=relay.peer_id)
            return {"start_to_relay_s": reachable - spawned, "ready_to_relay_s": reachable - ready,
                    "connect_direct_s": direct, "connect_relayed_s": relayed}
        finally:
            for node in made:
                node.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connects", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args(argv)
    problem = netlab_problem()
    if problem is not None:
        print(f"nat bench: cannot build the lab here: {problem}", file=sys.stderr)
        return 2
    machine = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="peerllm-nat-bench-") as tmp:
        for i in range(args.runs):
            runs.append(one_run(Path(tmp) / f"run{i}", args.connects))
            print(f"run {i + 1}/{args.runs}: {runs[-1]['start_to_relay_s']:.2f} s to a relay slot",
                  flush=True)
    summary = {
        "start_to_relay_s": median([r["start_to_relay_s"] for r in runs]),
        "ready_to_relay_s": median([r["ready_to_relay_s"] for r in runs]),
        "connect_direct_ms": _ms(median([s for r in runs for s in r["connect_direct_s"]])),
        "connect_relayed_ms": _ms(median([s for r in runs for s in r["connect_relayed_s"]])),
    }
    path = write_results(args.out, "nat", {"machine": machine, "args": vars(args) | {
        "out": str(args.out)}, "runs": runs, "summary": summary}, timestamp_slug())
    print(table([
        ["start -> reachable via relay (process spawn)", fmt(summary["start_to_relay_s"], " s")],
        ["ready -> reachable via relay", fmt(summary["ready_to_relay_s"], " s")],
        ["connect, NATed -> public (direct)", fmt(summary["connect_direct_ms"], " ms", 1)],
        ["connect, NATed -> NATed (via relay)", fmt(summary["connect_relayed_ms"], " ms", 1)],
    ], header=["median", "value"]))
    print(f"samples: {path}")
    return 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


if __name__ == "__main__":
    raise SystemExit(main())
