"""Fixtures for tests that load the bundled model: an in-process node with its HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import peerllm
from peerllm.api import open_api
from tests.helpers import node_config


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[peerllm.Node]:
    """A node serving the bundled model, no discovery, its API on 127.0.0.1."""
    cfg = node_config(tmp_path, "api", dht=False, serve_default=True)
    async with peerllm.open_node(cfg) as n, open_api(n):
        yield n
