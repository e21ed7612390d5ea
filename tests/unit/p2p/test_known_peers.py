"""The last-known-peers file: persisted, bounded, and tolerant of corruption."""

from __future__ import annotations

from pathlib import Path

from peerllm.p2p.known_peers import KnownPeers


def test_round_trip_newest_first_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "known_peers.json"
    kp = KnownPeers(path, limit=2)
    kp.remember("p1", ["/a1"], "one")
    kp.remember("p2", ["/a2"], "two")
    kp.remember("p3", ["/a3"], "three")
    kp.save_if_dirty()
    loaded = KnownPeers(path, limit=5).load()
    assert len(loaded) == 2
    assert {p for p, _ in loaded} <= {"p1", "p2", "p3"}


def test_corrupt_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "known_peers.json"
    path.write_text("{not json")
    assert KnownPeers(path, limit=5).load() == []
    path.write_text('{"peers": [{"peer_id": 5, "addrs": "x"}, {"peer_id": "ok", "addrs": ["/a"]}]}')
    assert KnownPeers(path, limit=5).load() == [("ok", ["/a"])]


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert KnownPeers(tmp_path / "none.json", limit=5).load() == []
