"""The private network key from a file (--network-key-file, PEERLLM_NETWORK_KEY_FILE), in
both forms, and the key appears nowhere: not in argv, the logs (at debug), node-info, the
status or the peer list."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import Daemon, clean_env, free_port, healthy_names, peerllm_cmd, poll_until

SECRET = "c0ffee" * 10 + "5eed"


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def shows_the_secret(text: str) -> bool:
    return SECRET in text.lower()


def test_both_file_forms_join_one_network_and_the_key_stays_secret(
        daemon: Callable[[str], Daemon], tmp_path: Path) -> None:
    hex_file = secret_file(tmp_path / "network.key", SECRET.upper() + "\n")
    swarm_key = secret_file(tmp_path / "swarm.key",
                            f"/key/swarm/psk/1.0.0/\n/base16/\n{SECRET}\n")
    a, b = daemon("key-a"), daemon("key-b")
    a.start("--no-mdns", "--log-level", "debug", "--network-key-file", str(hex_file))
    b.start("--no-mdns", "--log-level", "debug", "--bootstrap", a.addr,
            env={"PEERLLM_NETWORK_KEY_FILE": str(swarm_key)})
    poll_until(a.peers_json, lambda doc: "key-b" in healthy_names(doc["peers"]),
               what="key-a to see key-b in their private network")
    for d in (a, b):
        assert d.proc is not None
        cmdline = Path(f"/proc/{d.proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert not shows_the_secret(cmdline)
        with httpx.Client(base_url=d.api, trust_env=False) as http:
            for path in ("/v1/node/info", "/v1/node/status", "/v1/peers", "/metrics"):
                r = http.get(path)
                assert r.status_code == 200, path
                assert not shows_the_secret(r.text), f"{d.name} {path} shows the key"
            network = http.get("/v1/node/info").json()["network"]["network"]
            assert network.startswith("private:")
    for d in (a, b):
        d.stop()
        log = "".join(d.banner)
        assert "DEBUG" in log, "the logs were captured at debug level"
        assert not shows_the_secret(log), f"{d.name}'s log shows the key"


def test_a_bad_key_file_stops_the_daemon_without_showing_it(tmp_path: Path) -> None:
    bad = secret_file(tmp_path / "network.key", SECRET[:50] + "\n")
    proc = subprocess.run(peerllm_cmd(
        "node", "--data-dir", str(tmp_path / "data"), "--no-mdns", "--no-default-model",
        "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}", "--api", f"127.0.0.1:{free_port()}"),
        capture_output=True, text=True, timeout=60,
        env=clean_env(PEERLLM_NETWORK_KEY_FILE=str(bad)))
    assert proc.returncode == 1
    assert f"PEERLLM_NETWORK_KEY_FILE: network key file {bad}:" in proc.stderr
    assert "found one line of 50 characters" in proc.stderr
    assert "(sets p2p.network_key_file)" in proc.stderr
    assert SECRET[:50] not in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists(), "nothing may start (no identity made)"


def test_the_config_file_names_the_key_file(daemon: Callable[[str], Daemon],
                                            tmp_path: Path) -> None:
    key = secret_file(tmp_path / "swarm.key", f"/key/swarm/psk/1.0.0/\n/base16/\n{SECRET}\n")
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"p2p": {"network_key_file": str(key)}}))  # JSON is YAML
    d = daemon("from-yaml")
    d.start("--no-mdns", "--no-dht", "--config", str(config))
    with httpx.Client(base_url=d.api, trust_env=False) as http:
        assert http.get("/v1/node/info").json()["network"]["network"].startswith("private:")
