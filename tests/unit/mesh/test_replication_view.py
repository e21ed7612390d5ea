"""The replication loop's view from the peer registry: files by digest with their
targets, the feature, and which peers count at all."""

from __future__ import annotations

import dataclasses

from peerllm.mesh.replication import FEATURE, peer_sightings, sighting_of
from peerllm.p2p.registry import PeerRegistry, Source
from peerllm.testing import make_node_info
from peerllm.wire import nodeinfo as wni

DIGEST = "sha256:" + "ab" * 32


def info(peer: str, *, features: tuple[str, ...] = (FEATURE,), version: int | None = None
         ) -> wni.NodeInfo:
    base = make_node_info(peer, models=())
    models = (wni.ModelInfo(id="m", loaded=False, context_size=None, size_bytes=3 << 30,
                            tags=(), file_bytes=2 << 30, digest=DIGEST, replicas=2),
              wni.ModelInfo(id="digesting", loaded=False, context_size=None,
                            size_bytes=None, tags=()))
    return dataclasses.replace(
        base, models=models, protocol_version=version or wni.PROTOCOL_VERSION,
        capabilities=dataclasses.replace(base.capabilities, features=features))


def test_a_sighting_lists_files_by_digest_and_every_id_served() -> None:
    s = sighting_of(info("p1"), peer_id="p1", seen_at=5.0)
    (held,) = s.held
    assert (held.model_id, held.digest, held.replicas) == ("m", DIGEST, 2)
    assert (held.file_bytes, held.memory_bytes) == (2 << 30, 3 << 30)
    assert s.serves == {"m", "digesting"} and s.replicates and s.seen_at == 5.0
    assert not sighting_of(info("p2", features=()), peer_id="p2", seen_at=5.0).replicates


def test_peers_count_once_their_node_info_arrived_unless_incompatible() -> None:
    reg = PeerRegistry("me", stale_after_s=30.0, max_peers=8)
    for peer in ("good", "silent", "old"):
        reg.saw(peer, Source.MDNS, now=1.0)
    reg.info_received("old", info("old", version=99), rtt_ms=1.0, now=2.0,
                      compatible_version=wni.PROTOCOL_VERSION)
    reg.info_received("good", info("good"), rtt_ms=1.0, now=2.0,
                      compatible_version=wni.PROTOCOL_VERSION)
    (s,) = peer_sightings(reg)
    assert s.peer_id == "good" and s.seen_at == 2.0
