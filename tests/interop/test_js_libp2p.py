"""A stock js-libp2p 3.x peer (TCP, Noise, Yamux, identify, ping, kad-dht, pnet; pinned in
tests/interop/js/package-lock.json) against real PeerLLM nodes on 127.0.0.1, on an open
network and in a private one with a shared swarm.key.

The js side (tests/interop/js/peer.mjs) reads our protocols from protocols/*.md alone and
prints what it saw as JSON lines; the assertions are here. Every js process is killed when
its test ends (jspeer.py). Installed by ``npm ci --prefix tests/interop/js`` (.ci/run).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

import peerllm
from peerllm.testing import FakeBackend
from peerllm.wire.records import node_record_key
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model
from tests.interop.jspeer import JS, JsListener, js_dial, js_listener, swarm_key_file

needs_js = pytest.mark.usefixtures("js_libp2p")

KEY = "5ca1ab1e" * 8
OTHER_KEY = "0ddba11" + "0" * 57
NETWORKS = ("open", "private")
STANDARD = {"/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"}
OURS = {"/peerllm/node-info/1.0.0", "/peerllm/kad/1.0.0"}
REFUSAL_BOUND_S = 5.0
"""A refusal must not take py-libp2p's 30 s wrong-key path: it ends well inside this (the
promise is ≤ 2 s; this bound includes starting the js process)."""


def key_for(network: str, tmp_path: Path, key: str = KEY) -> Path | None:
    return swarm_key_file(tmp_path / f"{key[:8]}.key", key) if network == "private" else None


def key_settings(key: Path | None) -> dict[str, Path]:
    return {"network_key_file": key} if key is not None else {}


def checked(js: JsListener, key: str) -> list[dict[str, Any]]:
    return [e for e in js.of("record_checked") if e["key"] == key]


def key_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Our WARNING-or-worse lines that say the network key differs."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name.startswith("peerllm") and "network key differs" in r.getMessage()]


@needs_js
@pytest.mark.parametrize("network", NETWORKS)
async def test_js_dials_a_node_identifies_pings_and_reads_its_signed_info_and_record(
        make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        network: str) -> None:
    caplog.set_level(logging.DEBUG, logger="peerllm")
    key = key_for(network, tmp_path)
    cfg = with_fake_model(make_config("interop-node", **key_settings(key)))
    async with peerllm.open_node(cfg, backend=FakeBackend()) as node:
        result = await js_dial(node.addrs()[0], swarm_key=key)
    assert result.returncode == 0, f"{result.errors()}\n{result.stderr[-2000:]}"

    assert result.one("connected")["peer_id"] == node.peer_id
    identify = result.one("identify")
    assert identify["agent"] == f"peerllm/{peerllm.__version__}"
    assert set(identify["protocols"]) >= STANDARD | OURS
    assert "/ipfs/kad/1.0.0" not in identify["protocols"], "our DHT must not join IPFS's"
    assert result.one("ping")["rtt_ms"] >= 0

    info = result.one("node_info")  # the Ed25519 signature was checked in JS
    assert info["verified"] and info["signer"] == info["peer_id"] == node.peer_id
    assert info["name"] == "interop-node" and info["node_id"] == node.identity.node_id
    assert info["private_network"] is (network == "private")
    assert "/peerllm/node-info/1.0.0" in info["protocols"]

    record = result.one("dht_record")  # GET_VALUE over /peerllm/kad/1.0.0, verified in JS
    assert record["verified"] and record["from"] == node.peer_id
    assert record["kind"] == "node" and record["peer_id"] == node.peer_id
    assert record["name"] == "interop-node" and record["models"] == [FAKE_MODEL]
    assert any(addr.endswith(f"/p2p/{node.peer_id}") for addr in record["addrs"])
    assert KEY not in caplog.text.lower(), "the network key must never be logged"


@needs_js
@pytest.mark.parametrize("network", NETWORKS)
async def test_a_node_bootstrapped_to_js_connects_lists_it_and_keeps_it(
        make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        network: str) -> None:
    caplog.set_level(logging.DEBUG, logger="peerllm")
    key = key_for(network, tmp_path)
    async with js_listener(tmp_path / "js.stderr", swarm_key=key) as js:
        cfg = make_config("interop-node", bootstrap=[js.addr], **key_settings(key))
        async with peerllm.open_node(cfg) as node:
            await js.wait_for(lambda: bool(js.of("identify", node.peer_id)),
                              what="the js peer to identify the node")
            assert js.of("identify", node.peer_id)[0]["agent"] == \
                f"peerllm/{peerllm.__version__}"

            def row() -> dict[str, Any] | None:
                return next((r for r in node.peers() if r["peer_id"] == js.peer_id), None)

            await wait_until(lambda: (r := row()) is not None and r["state"] == "libp2p",
                             what="the node to list the js peer as a plain libp2p peer")
            assert node.dht is not None
            await wait_until(lambda: js.peer_id in node.dht.routing_peers(),  # type: ignore[union-attr]
                             what="the js peer in the node's DHT routing table")
            # Several heartbeats: a peer without node-info is neither dropped nor redialled.
            await trio.sleep(4 * cfg.p2p.heartbeat_interval_s)
            assert len(js.of("connection_open", node.peer_id)) == 1, js.events
            assert not js.of("disconnected", node.peer_id), js.events
            shown = row()
            assert shown is not None
            assert shown["kind"] == "libp2p" and shown["connected"], shown
            assert shown["path"] == "direct" and "bootstrap" in shown["sources"], shown
            assert shown["agent"].startswith("js-libp2p/"), shown
            assert set(shown["protocols"]) >= STANDARD | {"/peerllm/kad/1.0.0"}, shown
            assert "/peerllm/node-info/1.0.0" not in shown["protocols"], shown
            # The node put its record on the js peer: it passed the spec's validator there.
            await js.wait_for(lambda: bool(checked(js, node_record_key(node.peer_id))),
                              what="the node's DHT record to reach the js peer")
            assert all(e["valid"] for e in js.of("record_checked")), js.of("record_checked")


MISMATCHES = {  # (our key, theirs): None = the open network
    "another key": (KEY, OTHER_KEY), "js without a key": (KEY, None),
    "js with a key, we without": (None, KEY)}


def mismatch(case: str, tmp_path: Path) -> tuple[Path | None, Path | None]:
    return tuple(key if key is None else swarm_key_file(tmp_path / f"{key[:8]}.key", key)
                 for key in MISMATCHES[case])  # type: ignore[return-value]


@needs_js
@pytest.mark.parametrize("case", MISMATCHES)
async def test_js_from_another_network_is_refused_fast_with_a_warning(
        make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        case: str) -> None:
    ours, theirs = mismatch(case, tmp_path)
    async with peerllm.open_node(make_config("interop-node", **key_settings(ours))) as node:
        with trio.fail_after(REFUSAL_BOUND_S):
            result = await js_dial(node.addrs()[0], swarm_key=theirs, steps=("identify",))
            await wait_until(lambda: bool(key_warnings(caplog)), timeout_s=REFUSAL_BOUND_S,
                             what="the node's WARNING that the network key differs")
    assert result.returncode == 1 and result.one("error")["step"] == "dial", result.events
    assert not result.of("connected")


@needs_js
@pytest.mark.parametrize("case", MISMATCHES)
async def test_a_node_bootstrapped_to_js_of_another_network_refuses_it_with_a_warning(
        make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        case: str) -> None:
    caplog.set_level(logging.INFO, logger="peerllm")
    ours, theirs = mismatch(case, tmp_path)
    async with js_listener(tmp_path / "js.stderr", swarm_key=theirs) as js:
        cfg = make_config("interop-node", bootstrap=[js.addr], **key_settings(ours))
        async with peerllm.open_node(cfg) as node:

            def refused() -> bool:
                return bool(key_warnings(caplog)) and any(
                    row["peer_id"] == js.peer_id and row["state"] == "refused"
                    and "network key differs" in (row["reason"] or "")
                    for row in node.peers())

            with trio.move_on_after(REFUSAL_BOUND_S):
                while not refused():
                    await trio.sleep(0.05)
            if not refused():
                raise AssertionError(f"no refusal with a WARNING within {REFUSAL_BOUND_S} s;"
                                     f" peers: {node.peers()}")
        assert not js.of("identify", node.peer_id), "no libp2p session may start"


def test_the_lockfile_pins_what_package_json_asks_for() -> None:
    """`npm ci` refuses a lockfile that disagrees with package.json; catch it here first."""
    manifest = json.loads((JS / "package.json").read_text())
    lock = json.loads((JS / "package-lock.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
