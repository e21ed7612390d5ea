"""Plain libp2p peers (a stock py-libp2p host in its own process: Noise, Yamux, identify
and ping only) are kept as such by a real node, in both directions: listed with their
agent and protocols, connected directly, never a candidate, never redialled in a loop;
and a bootstrap address that cannot be dialled is listed with its reason."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

import peerllm
from peerllm.api import open_api
from peerllm.cli import cli
from peerllm.node import Node
from peerllm.wire import nodeinfo as wni
from tests.helpers import MakeConfig, clean_env, free_port, wait_until

SCRIPT = Path(__file__).with_name("plain_libp2p_peer.py")
HEARTBEATS_WATCHED = 4
"""Heartbeats (1 s each in node_config) a test watches for redials that must not come."""
DEAD_PEER = "12D3KooWLRPJAA5o6aQPSxhtLmtVZPiVpXqJwXC1pKeB6gPjYpMS"
"""A valid peer ID nobody runs: its bootstrap address cannot be dialled."""


@dataclass
class PlainPeer:
    """The plain py-libp2p process: its address and every fact it printed so far."""

    addr: str = ""
    facts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        return self.addr.rpartition("/p2p/")[2]

    def connections(self, peer_id: str) -> int:
        return sum(1 for f in self.facts
                   if f.get("event") == "connected" and f.get("peer") == peer_id)

    def drops(self, peer_id: str) -> int:
        return sum(1 for f in self.facts
                   if f.get("event") == "disconnected" and f.get("peer") == peer_id)


@asynccontextmanager
async def plain_peer(*args: str) -> AsyncIterator[PlainPeer]:
    """Run plain_libp2p_peer.py until the block ends (its stdin is closed, then it exits)."""
    peer = PlainPeer()
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=clean_env())
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout

    async def read_facts() -> None:
        buf = b""
        while chunk := await stdout.receive_some():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                fact = json.loads(line)
                peer.addr = fact.get("addr", peer.addr)
                peer.facts.append(fact)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_facts)
            await wait_until(lambda: bool(peer.addr), what="the plain peer to listen")
            yield peer
            await proc.stdin.aclose()
            with trio.fail_after(10):
                await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stdout.aclose()
        await proc.stdin.aclose()


def row_of(node: Node, peer_id: str) -> dict[str, Any] | None:
    return next((p for p in node.peers() if p["peer_id"] == peer_id), None)


def is_plain(node: Node, peer_id: str) -> bool:
    row = row_of(node, peer_id)
    return row is not None and row["state"] == "libp2p" and row["connected"]


def assert_kept_as_plain(row: dict[str, Any] | None) -> None:
    assert row is not None
    assert (row["kind"], row["state"], row["connected"], row["path"]) == (
        "libp2p", "libp2p", True, "direct")
    assert row["agent"] is not None and row["agent"].startswith("py-libp2p/")
    assert {"/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"} <= set(row["protocols"])
    assert wni.PROTOCOL_ID not in row["protocols"]
    assert row["name"] is None and row["models"] == []


async def test_a_node_bootstrapped_to_a_plain_peer_keeps_it_and_lists_a_dead_bootstrap(
        make_config: MakeConfig, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{DEAD_PEER}"
    async with plain_peer() as plain, \
            peerllm.open_node(make_config("keeper", bootstrap=[plain.addr, dead])) as node:
        await wait_until(lambda: is_plain(node, plain.peer_id), what="the plain peer kept")
        await trio.sleep(HEARTBEATS_WATCHED * node.config.p2p.heartbeat_interval_s)
        row = row_of(node, plain.peer_id)
        assert_kept_as_plain(row)
        assert row is not None and "bootstrap" in row["sources"]
        # One connection over all those heartbeats: no drop, no redial.
        assert (plain.connections(node.peer_id), plain.drops(node.peer_id)) == (1, 0)
        route = node.explain("any-model")
        assert plain.peer_id not in {c["peer_id"] for c in route["candidates"]}
        failed = row_of(node, DEAD_PEER)
        assert failed is not None
        assert (failed["kind"], failed["state"], failed["connected"]) == (
            "unknown", "unreachable", False)
        assert "bootstrap" in failed["sources"]
        assert failed["reason"].startswith("bootstrap dial failed: ")
        assert failed["path"] is None
    # A welcome peer is no error: nothing about it above INFO (py-libp2p logs each "na"
    # it gets as a 7-line ERROR; p2p/host.py lowers those).
    assert [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_plain_peer_that_dials_a_node_is_kept_and_shown_by_peerllm_peers(
        make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("host")) as node, open_api(node) as url, \
            plain_peer("--dial", node.addrs()[0]) as plain:
        await wait_until(lambda: is_plain(node, plain.peer_id), what="the plain peer kept")
        await trio.sleep(HEARTBEATS_WATCHED * node.config.p2p.heartbeat_interval_s)
        row = row_of(node, plain.peer_id)
        assert_kept_as_plain(row)
        assert row is not None and row["sources"] == ["inbound"]
        assert (plain.connections(node.peer_id), plain.drops(node.peer_id)) == (1, 0)
        # The CLI is synchronous: off the trio thread, so the node keeps answering it.
        result = await trio.to_thread.run_sync(lambda: CliRunner().invoke(
            cli, ["peers", "--api", url], env={"COLUMNS": "250"}))
        assert result.exit_code == 0, result.output
        assert "plain libp2p peers (kept, not used for inference)" in result.output
        lines = [ln for ln in result.output.splitlines() if plain.peer_id[-8:] in ln]
        assert any("libp2p" in ln and "direct" in ln for ln in lines), result.output
        assert any("py-libp2p/" in ln for ln in lines), result.output
