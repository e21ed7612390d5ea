"""Fixtures for tests that load the bundled model: an in-process node with its HTTP API, and
a two-node mesh whose API node holds no model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import peerllm
from peerllm.api import open_api
from tests.helpers import MODEL, node_config, wait_until


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[peerllm.Node]:
    """A node serving the bundled model, no discovery, its API on 127.0.0.1."""
    cfg = node_config(tmp_path, "api", dht=False, serve_default=True)
    async with peerllm.open_node(cfg) as n, open_api(n):
        yield n


@dataclass(frozen=True)
class Mesh:
    """Two nodes: ``holder`` serves the bundled model, ``front`` serves none and is
    bootstrapped to holder; clients talk to ``url`` (front's API), so every request they
    make crosses the mesh."""

    holder: peerllm.Node
    front: peerllm.Node
    url: str


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """A two-node mesh that is ready: front already sees holder's model."""
    holder_cfg = node_config(tmp_path, "holder", dht=False, serve_default=True)
    async with peerllm.open_node(holder_cfg) as holder:
        front_cfg = node_config(tmp_path, "front", dht=False, bootstrap=[holder.addrs()[0]])
        async with peerllm.open_node(front_cfg) as front, open_api(front) as url:
            await wait_until(lambda: bool(front.router.candidates(MODEL)[0]), timeout_s=30,
                             what="the front node sees the holder's model")
            yield Mesh(holder, front, url)
