"""End to end: `peerllm node` processes, `peerllm peers`, `peerllm identity`."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import Daemon, clean_env, free_port, healthy_names, peerllm_cmd, poll_until


def wait_for_names(d: Daemon, names: set[str], timeout_s: float = 30.0) -> dict[str, Any]:
    return poll_until(d.peers_json, lambda doc: names <= healthy_names(doc["peers"]),
                      timeout_s=timeout_s, what=f"{d.name} to see {sorted(names)}")


def says_key_differs(lines: list[str]) -> bool:
    return any("network key differs" in line for line in lines)


def test_three_process_chain_and_restart(daemon: Callable[[str], Daemon]) -> None:
    a, b, c = daemon("node-a"), daemon("node-b"), daemon("node-c")
    a.start("--no-mdns")
    b.start("--no-mdns", "--bootstrap", a.addr)
    c.start("--no-mdns", "--bootstrap", b.addr)
    for d, others in ((a, {"node-b", "node-c"}), (b, {"node-a", "node-c"}),
                      (c, {"node-a", "node-b"})):
        doc = wait_for_names(d, others)
        assert doc["self"]["node"]["name"] == d.name  # type: ignore[index]
        for p in doc["peers"]:  # type: ignore[attr-defined]
            assert set(p) >= {"peer_id", "name", "id", "addrs", "models", "state", "sources",
                              "rtt_ms", "last_seen", "reason"}
    peer_id = c.peer_id
    assert c.stop() < 5.0, "SIGTERM must stop the daemon within 5 s"
    assert c.proc is not None and c.proc.returncode == 0
    c.start("--no-mdns", "--bootstrap", b.addr)
    assert c.peer_id == peer_id, "identity must survive a restart"
    wait_for_names(c, {"node-a", "node-b"})
    assert a.stop(signal.SIGINT) < 5.0


def test_network_key_keeps_outsiders_out(daemon: Callable[[str], Daemon]) -> None:
    key1, key2 = "11" * 32, "22" * 32
    a, b, out = daemon("priv-a"), daemon("priv-b"), daemon("outsider")
    a.start("--no-mdns", "--network-key", key1)
    b.start("--no-mdns", "--network-key", key1, "--bootstrap", a.addr)
    out.start("--no-mdns", "--network-key", key2, "--bootstrap", a.addr)
    wait_for_names(a, {"priv-b"})
    doc = poll_until(out.peers_json,
                     lambda d: any(p["state"] == "refused" for p in d["peers"]),
                     what="the outsider to be refused")
    assert all(p["state"] != "healthy" for p in doc["peers"])
    refused = [p for p in doc["peers"] if p["state"] == "refused"]
    assert "network key differs" in refused[0]["reason"]
    poll_until(lambda: out.banner, says_key_differs, what="the outsider's log")
    poll_until(lambda: a.banner, says_key_differs, what="priv-a's log")
    assert "outsider" not in {p["name"] for p in a.peers_json()["peers"]}


def test_corrupt_key_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "broken"
    data.mkdir()
    key = data / "node.key"
    key.write_bytes(b"this is not a key")
    proc = subprocess.run(peerllm_cmd("node", "--data-dir", str(data), "--no-mdns",
                                      "--no-default-model", "--listen",
                                      f"/ip4/127.0.0.1/tcp/{free_port()}",
                                      "--api", f"127.0.0.1:{free_port()}"),
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode != 0
    assert str(key) in proc.stderr
    assert key.read_bytes() == b"this is not a key"


def test_peers_without_daemon_is_one_line_error() -> None:
    proc = subprocess.run(peerllm_cmd("peers", "--api", f"http://127.0.0.1:{free_port()}"),
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "no peerllm node at" in proc.stderr


def test_identity_command_is_stable(tmp_path: Path) -> None:
    args = peerllm_cmd("identity", "--json", "--data-dir", str(tmp_path / "id"))
    first = json.loads(subprocess.run(args, capture_output=True, text=True, check=True,
                                      env=clean_env(), timeout=60).stdout)
    second = json.loads(subprocess.run(args, capture_output=True, text=True, check=True,
                                       env=clean_env(), timeout=60).stdout)
    assert first == second
    assert first["peer_id"].startswith("12D3KooW")


def test_bad_flag_names_the_problem(tmp_path: Path) -> None:
    proc = subprocess.run(peerllm_cmd("node", "--data-dir", str(tmp_path), "--network-key", "abc"),
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode != 0
    assert "64 hex characters" in proc.stderr


def test_frozen_peer_is_detected_and_recovers(daemon: Callable[[str], Daemon]) -> None:
    """SIGSTOP keeps the TCP connection open; only the node-info heartbeat notices."""
    a, b = daemon("watcher"), daemon("sleeper")
    a.start("--no-mdns")
    b.start("--no-mdns", "--bootstrap", a.addr)
    wait_for_names(a, {"sleeper"})
    assert b.proc is not None
    b.proc.send_signal(signal.SIGSTOP)
    try:
        row = poll_until(lambda: next(p for p in a.peers_json()["peers"]
                                      if p["name"] == "sleeper"),
                         lambda r: r["state"] in ("stale", "unreachable"),
                         what="the frozen peer to be noticed")
        assert row["reason"]
    finally:
        b.proc.send_signal(signal.SIGCONT)
    wait_for_names(a, {"sleeper"}, timeout_s=60)
