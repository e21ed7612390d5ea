"""Real NAT topologies (tests/netlab.py: network namespaces, veth, nftables masquerade):
nodes behind NATs learn they are private, reach a public node, and are served through it.

Each node is a process in its own namespace (tests/netlab_node.py), run with FakeBackend;
the lab is torn down after each test. Without root, ``ip`` or ``nft`` the tests skip
with the reason (and fail under PEERLLM_CI=1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAKE_MODEL, poll_until
from tests.netlab import Lab, open_lab, require_netlab
from tests.netlab_node import NetNode

VERDICT_TIMEOUT_S = 60.0


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_netlab()
    short = request.node.name.removeprefix("test_")[:10].replace("_", "")
    with open_lab(short) as made:
        yield made


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., NetNode]]:
    """Factory for lab nodes; all are stopped (and their logs shown on failure) after."""
    made: list[NetNode] = []

    def start(host: Any, name: str, **kw: Any) -> NetNode:
        node = NetNode.start(host, tmp_path, name, **kw)
        made.append(node)
        return node

    yield start
    for node in made:
        node.stop()
        print(f"--- {node.name} log (tail) ---\n{node.tail(30)}")


def reachability(node: NetNode) -> str:
    return str(node.ask("state")["status"]["reachability"]["status"])


def test_natted_node_dials_a_public_one_and_learns_it_is_private(
        lab: Lab, nodes: Callable[..., NetNode]) -> None:
    public = nodes(lab.public_host("r"), "pub", fake_model=True)
    nat = lab.nat("n1")
    inside = nodes(lab.private_host("a", nat), "inside", bootstrap=[public.addr])
    # AutoNAT: the public node cannot dial the NATed one back, the other way works.
    poll_until(lambda: reachability(inside), lambda s: s == "private",
               timeout_s=VERDICT_TIMEOUT_S, what="the NATed node's verdict")
    poll_until(lambda: reachability(public), lambda s: s == "public",
               timeout_s=VERDICT_TIMEOUT_S, what="the public node's verdict")
    state = inside.ask("state")
    assert "NAT" in state["status"]["reachability"]["reason"]
    assert public.peer_id in state["connected"]
    # The NATed node is served by the public one over its direct (outbound) connection.
    poll_until(lambda: inside.ask("state")["peers"],
               lambda rows: any(r["peer_id"] == public.peer_id and r["state"] == "healthy"
                                for r in rows), what="the public node healthy")
    done = inside.ask("chat", model=FAKE_MODEL)
    assert done["status_code"] == 200, done
    assert done["body"]["peerllm"]["served_by"] == public.peer_id
    assert done["body"]["choices"][0]["message"]["content"]


def test_two_natted_nodes_meet_and_are_served_through_a_public_relay(
        lab: Lab, nodes: Callable[..., NetNode]) -> None:
    relay = nodes(lab.public_host("r"), "relay")
    bob = nodes(lab.private_host("b", lab.nat("n2")), "bob", bootstrap=[relay.addr],
                fake_model=True, hole_punch=False)
    private_with_circuit(bob, relay)
    assert reachability(relay) == "public"  # bob dialled it back: it relays (auto)
    # Alice comes later (bob's circuit address is known by then: see the report on
    # DHT-found peers whose first dial fails) and finds bob through the relay's DHT.
    alice = nodes(lab.private_host("a", lab.nat("n1")), "alice", bootstrap=[relay.addr],
                  hole_punch=False)
    row = poll_until(lambda: _row(alice, bob.peer_id),
                     lambda r: r is not None and r["state"] == "healthy",
                     timeout_s=60, what="bob healthy at alice")
    assert row is not None
    private_with_circuit(alice, relay)
    # The connection runs through the relay (no hole punching asked for), and the
    # peers list says so.
    assert _relayed_via(alice, bob.peer_id) == relay.peer_id
    row = _row(alice, bob.peer_id)
    assert row is not None and row["path"] == "relayed via relay", row
    done = alice.ask("chat", model=FAKE_MODEL)
    assert done["status_code"] == 200, done
    assert done["body"]["peerllm"]["served_by"] == bob.peer_id
    assert done["body"]["choices"][0]["message"]["content"]


def private_with_circuit(node: NetNode, relay: NetNode) -> None:
    """Wait until ``node`` knows it is behind a NAT and holds a slot on ``relay``."""
    poll_until(lambda: reachability(node), lambda s: s == "private",
               timeout_s=VERDICT_TIMEOUT_S, what=f"{node.name}'s verdict")
    poll_until(lambda: node.ask("state")["addrs"],
               lambda addrs: any(f"/p2p/{relay.peer_id}/p2p-circuit" in a for a in addrs),
               timeout_s=VERDICT_TIMEOUT_S, what=f"{node.name}'s circuit address")


def _relayed_via(node: NetNode, peer_id: str) -> str | None:
    return node.ask("link", peer=peer_id)["relay"]  # type: ignore[no-any-return]


def _row(node: NetNode, peer_id: str) -> dict[str, Any] | None:
    return next((r for r in node.ask("state")["peers"] if r["peer_id"] == peer_id), None)


def test_hole_punching_upgrades_the_relayed_connection_to_direct(
        lab: Lab, nodes: Callable[..., NetNode]) -> None:
    relay = nodes(lab.public_host("r"), "relay")
    bob_nat = lab.nat("n2")
    bob = nodes(lab.private_host("b", bob_nat), "bob", bootstrap=[relay.addr],
                fake_model=True)
    private_with_circuit(bob, relay)
    alice = nodes(lab.private_host("a", lab.nat("n1")), "alice", bootstrap=[relay.addr])
    poll_until(lambda: _row(alice, bob.peer_id),
               lambda r: r is not None and r["state"] == "healthy",
               timeout_s=60, what="bob healthy at alice")
    # DCUtR: both dial from their listen port at once; the masquerading NATs keep the
    # port, so alice ends up connected to bob's NAT at port 4001, no relay in between.
    link = poll_until(lambda: alice.ask("link", peer=bob.peer_id),
                      lambda got: f"/ip4/{bob_nat.public_ip}/tcp/4001" in got["addrs"],
                      timeout_s=60, what="a direct connection from alice to bob")
    assert link["connected"]
    poll_until(lambda: _row(alice, bob.peer_id), lambda r: r is not None
               and r["path"] == "direct", what="bob shown as direct at alice")
    done = alice.ask("chat", model=FAKE_MODEL)
    assert done["status_code"] == 200, done
    assert done["body"]["peerllm"]["served_by"] == bob.peer_id
