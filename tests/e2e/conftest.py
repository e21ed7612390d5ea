"""An in-process node serving the bundled model, with its HTTP API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import peerllm
from peerllm.api import open_api
from peerllm.config import NodeConfig, config_from_mapping
from peerllm.inference.catalog import DEFAULT_MODEL_ID
from tests.integration.conftest import wait_until as wait_until

MODEL = DEFAULT_MODEL_ID


def api_config(tmp_path: Path, name: str = "api") -> NodeConfig:
    return config_from_mapping({
        "data_dir": str(tmp_path / name),
        "node": {"name": name},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "heartbeat_interval_s": 1.0,
                "call_timeout_s": 2.0, "dial_timeout_s": 3.0},
        "discovery": {"mdns": False, "dht": False},
        "api": {"host": "127.0.0.1", "port": 0},
        "models": {"serve_default": True},
    })


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[peerllm.Node]:
    async with peerllm.open_node(api_config(tmp_path)) as n, open_api(n):
        yield n


def api_url(node: peerllm.Node) -> str:
    assert node.api_url is not None
    return node.api_url


