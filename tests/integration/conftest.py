"""Helpers for tests that run real nodes (libp2p hosts, HTTP APIs) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from peerllm.config import NodeConfig, config_from_mapping

MakeConfig = Callable[..., NodeConfig]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """Config for an in-process node: loopback only, ephemeral ports, own data dir."""

    def make(name: str, *, bootstrap: list[str] | None = None, mdns: bool = False,
             network_key: str | None = None, dht: bool = True, **p2p: Any) -> NodeConfig:
        return config_from_mapping({
            "data_dir": str(tmp_path / name),
            "node": {"name": name},
            "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": bootstrap or [],
                    "network_key": network_key, "heartbeat_interval_s": 1.0,
                    "call_timeout_s": 2.0, "dial_timeout_s": 3.0, **p2p},
            "discovery": {"mdns": mdns, "mdns_interfaces": ["127.0.0.1"], "dht": dht},
            "api": {"host": "127.0.0.1", "port": 0},
            "models": {"serve_default": False},
        })

    return make


async def wait_until(pred: Callable[[], bool], *, timeout_s: float = 20.0,
                     what: str = "condition") -> None:
    """Poll ``pred`` until true; fail the test (not hang) after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def healthy_names(peers: list[dict[str, Any]]) -> set[str]:
    return {p["name"] for p in peers if p["state"] == "healthy" and p["name"]}
