"""Peer registry state transitions (pure; time is a parameter)."""

from __future__ import annotations

import dataclasses

from peerllm.mesh.documents import peer_row
from peerllm.p2p.registry import Link, PeerRegistry, PeerState, Source
from peerllm.wire import nodeinfo as w

SELF = "12D3KooWself"


def info(peer_id: str, *, nonce: bytes = b"\x01" * 16, seq: int = 1,
         version: int = 1) -> w.NodeInfo:
    return w.NodeInfo(
        protocol_version=version, software_version="0.1.0", peer_id=peer_id,
        node_id="7b0c1d5e-0000-4000-8000-000000000000", name="peer", location=None, tags=(),
        boot_nonce=nonce, started_at=1000.0, issued_at=1000.0, seq=seq,
        addrs=(f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id}",),
        capabilities=w.Capabilities(protocols=(), features=(), private_network=False),
        resources=w.Resources(cpu_cores=2, ram_total_bytes=8, ram_free_bytes=4, gpus=()),
        models=(w.ModelInfo(id="m", loaded=False, context_size=None, size_bytes=1, tags=()),),
        load=w.Load(active=0, queued=0, capacity=1),
        performance=w.Performance(tokens_per_second=None, ttft_ms=None))


def reg() -> PeerRegistry:
    return PeerRegistry(SELF, stale_after_s=30.0, max_peers=3)


def test_never_contains_self_and_merges_sources() -> None:
    r = reg()
    assert r.saw(SELF, Source.MDNS, now=0) is None
    r.saw("p1", Source.MDNS, now=0, addrs=["/a"])
    e = r.saw("p1", Source.DHT, now=1, addrs=["/a", "/b"])
    assert e is not None
    assert e.sources == {Source.MDNS, Source.DHT}
    assert e.addrs == ["/a", "/b"]
    assert len(r) == 1


def test_info_makes_healthy_then_stale_then_unreachable() -> None:
    r = reg()
    r.saw("p1", Source.BOOTSTRAP, now=0)
    e = r.info_received("p1", info("p1"), rtt_ms=2.0, now=10, compatible_version=1)
    assert e is not None
    assert e.state is PeerState.HEALTHY
    assert e.reason is None
    row = peer_row(e, breaker="closed")
    assert row["models"] == ["m"]
    assert row["state"] == "healthy"
    r.refresh_states(now=50)
    assert e.state is PeerState.STALE
    assert e.reason is not None
    r.failed("p1", "timeout", now=51, max_misses=2)
    assert e.state is PeerState.STALE
    r.failed("p1", "timeout", now=52, max_misses=2)
    assert e.state is PeerState.UNREACHABLE
    assert e.reason == "timeout"


def test_incompatible_version_has_a_reason() -> None:
    r = reg()
    r.saw("p1", Source.MDNS, now=0)
    e = r.info_received("p1", info("p1", version=2), rtt_ms=1, now=1, compatible_version=1)
    assert e is not None
    assert e.state is PeerState.INCOMPATIBLE
    assert "version 2" in (e.reason or "")


def test_refused_peer() -> None:
    r = reg()
    r.saw("p1", Source.BOOTSTRAP, now=0)
    e = r.failed("p1", "network key differs", now=1, refused=True)
    assert e is not None
    assert e.state is PeerState.REFUSED


def test_older_answer_does_not_replace_newer() -> None:
    r = reg()
    r.saw("p1", Source.MDNS, now=0)
    r.info_received("p1", info("p1", seq=5), rtt_ms=1, now=1, compatible_version=1)
    e = r.info_received("p1", info("p1", seq=3), rtt_ms=1, now=2, compatible_version=1)
    assert e is not None
    assert e.info is not None
    assert e.info.seq == 5


def test_alternating_boot_nonces_flag_a_cloned_identity() -> None:
    r = reg()
    r.saw("p1", Source.MDNS, now=0)
    a, b = b"\x01" * 16, b"\x02" * 16
    r.info_received("p1", info("p1", nonce=a), rtt_ms=1, now=1, compatible_version=1)
    e = r.info_received("p1", info("p1", nonce=b), rtt_ms=1, now=2, compatible_version=1)
    assert e is not None
    assert e.conflicts == []  # one change = a restart
    r.info_received("p1", info("p1", nonce=a), rtt_ms=1, now=3, compatible_version=1)
    assert any("cloned" in c for c in e.conflicts)


def test_full_registry_evicts_dead_peers_only() -> None:
    r = reg()
    for p in ("p1", "p2", "p3"):
        r.saw(p, Source.DHT, now=0)
    assert r.saw("p4", Source.DHT, now=1) is None
    r.failed("p2", "gone", now=2, max_misses=1)
    assert r.saw("p4", Source.DHT, now=3) is not None
    assert r.get("p2") is None


def test_rtt_is_smoothed() -> None:
    r = reg()
    r.saw("p1", Source.MDNS, now=0)
    r.info_received("p1", info("p1", seq=1), rtt_ms=10, now=1, compatible_version=1)
    e = r.info_received("p1", dataclasses.replace(info("p1"), seq=2), rtt_ms=0, now=2,
                        compatible_version=1)
    assert e is not None
    assert e.rtt_ms == 7.0


def test_a_plain_libp2p_peer_keeps_its_identify_and_forgets_any_node_info() -> None:
    r = reg()
    r.saw("p1", Source.BOOTSTRAP, now=0)
    r.info_received("p1", info("p1"), rtt_ms=1, now=1, compatible_version=1)
    e = r.plain_peer("p1", agent="js-libp2p/3.0.0", protocols=("/ipfs/id/1.0.0",), now=2)
    assert e is not None
    assert (e.state, e.agent, e.protocols, e.info, e.name) == (
        PeerState.LIBP2P, "js-libp2p/3.0.0", ("/ipfs/id/1.0.0",), None, None)
    assert e.reason == "does not speak /peerllm/node-info/1.0.0"
    row = peer_row(e, breaker="closed")
    assert (row["kind"], row["agent"], row["protocols"], row["models"]) == (
        "libp2p", "js-libp2p/3.0.0", ["/ipfs/id/1.0.0"], [])
    r.refresh_states(now=1000)
    assert e.state is PeerState.LIBP2P  # no node-info to go stale
    assert r.plain_peer("unknown", agent=None, protocols=(), now=3) is None


def test_path_is_direct_while_any_connection_is_and_relayed_via_the_relay_otherwise() -> None:
    r = reg()
    e = r.saw("p1", Source.DHT, now=0)
    assert e is not None
    assert (e.connected, e.relay, peer_row(e, breaker="closed")["path"]) == (False, None, None)
    relayed = Link("/ip4/10.0.0.1/tcp/4001/p2p/R/p2p-circuit", relay="R")
    r.connection_opened("p1", relayed, now=1)
    assert (e.connected, e.relay) == (True, "R")
    assert peer_row(e, breaker="closed")["path"] == "relayed via R"
    assert peer_row(e, breaker="closed", relay_name="relay-1")["path"] == "relayed via relay-1"
    direct = Link("/ip4/10.0.0.2/tcp/4001")
    r.connection_opened("p1", direct, now=2)  # a hole punch: the direct one joins
    assert (e.relay, peer_row(e, breaker="closed")["path"]) == (None, "direct")
    r.connection_closed("p1", relayed)  # then the relayed one closes
    assert (e.connected, e.relay, e.last_seen) == (True, None, 2)
    r.connection_closed("p1", direct)
    assert (e.connected, peer_row(e, breaker="closed")["path"]) == (False, None)
    r.connection_closed("p1", direct)  # a duplicate close is harmless
    assert e.links == []


def test_kind_says_what_answered() -> None:
    r = reg()
    e = r.saw("p1", Source.BOOTSTRAP, now=0)
    assert e is not None and peer_row(e, breaker="closed")["kind"] == "unknown"
    r.info_received("p1", info("p1"), rtt_ms=1, now=1, compatible_version=1)
    assert peer_row(e, breaker="closed")["kind"] == "peerllm"


def test_a_disconnected_plain_peer_may_be_evicted_a_connected_one_not() -> None:
    r = reg()
    for p in ("p1", "p2", "p3"):
        r.saw(p, Source.INBOUND, now=0)
        r.plain_peer(p, agent=None, protocols=(), now=0)
        r.connection_opened(p, Link(None), now=0)
    assert r.saw("p4", Source.DHT, now=1) is None  # all connected: kept
    r.connection_closed("p2", Link(None))
    assert r.saw("p4", Source.DHT, now=2) is not None
    assert r.get("p2") is None


def test_a_connection_opened_before_the_peer_is_listed_is_adopted() -> None:
    r = reg()
    relayed = Link("/ip4/10.0.0.1/tcp/1/p2p/R/p2p-circuit", relay="R")
    r.connection_opened("p1", relayed, now=0)  # dialled by the DHT or a relay keeper
    r.connection_opened("p2", Link(None), now=0)
    r.connection_closed("p2", Link(None))
    r.connection_opened(SELF, Link(None), now=0)
    assert len(r) == 0
    e = r.saw("p1", Source.DHT, now=1)
    assert e is not None and (e.connected, e.relay) == (True, "R")
    e2 = r.saw("p2", Source.DHT, now=1)
    assert e2 is not None and not e2.connected  # it closed before being listed


def test_unlisted_connections_are_bounded() -> None:
    r = reg()  # max_peers=3: at most 3 unlisted peers' connections are kept, the newest
    for i in range(10):
        r.connection_opened(f"u{i}", Link(None), now=0)
    newest, oldest = r.saw("u9", Source.DHT, now=1), r.saw("u0", Source.DHT, now=1)
    assert newest is not None and newest.connected
    assert oldest is not None and not oldest.connected
