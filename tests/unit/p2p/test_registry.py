"""Peer registry state transitions (pure; time is a parameter)."""

from __future__ import annotations

import dataclasses

from peerllm.mesh.documents import peer_row
from peerllm.p2p.registry import PeerRegistry, PeerState, Source
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
