"""Serve a node's HTTP API with hypercorn's trio worker, next to the node in one trio loop.

``open_api(node)`` is how the daemon and library users run it: the API is bound and
``node.api_url`` set when the block is entered, and stops when it is left.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ..errors import ConfigError
from .app import build_app

if TYPE_CHECKING:
    from ..config import NodeConfig
    from ..node import Node

logger = logging.getLogger(__name__)


def check_exposure(config: NodeConfig) -> None:
    """Refuse a non-loopback API without auth unless explicitly allowed (then warn)."""
    if not config.api_exposed_without_auth:
        return
    if not config.auth.insecure_no_auth:
        raise ConfigError(
            "api.host", f"the HTTP API would listen on {config.api.host}, reachable from the "
            "network, without authentication; start with --require-auth (and create "
            "tokens with `peerllm token create`), bind to 127.0.0.1, or pass "
            "--insecure-no-auth if every machine that can reach it may use and manage "
            "this node")
    logger.warning("the HTTP API on %s is open to the network WITHOUT authentication "
                   "(--insecure-no-auth): anyone who reaches it can use and manage this node",
                   config.api.host)


async def serve_api(node: Node, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                    ) -> None:
    """Serve until cancelled; ``task_status.started`` gets the base URL once bound.

    Raises:
        ConfigError: the API would be open to the network without auth (and
            ``auth.insecure_no_auth`` does not say that is wanted).
    """
    check_exposure(node.config)
    cfg = Config()
    host = node.config.api.host
    bind_host = f"[{host}]" if ":" in host else host
    cfg.bind = [f"{bind_host}:{node.config.api.port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("peerllm.api.hypercorn")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30.0

    async def started(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                      ) -> None:
        await serve(build_app(node), cfg, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started)
        url = binds[0] if binds else f"http://{bind_host}:{node.config.api.port}"
        logger.info("HTTP API on %s", url)
        task_status.started(url)


@asynccontextmanager
async def open_api(node: Node) -> AsyncIterator[str]:
    """Serve ``node``'s API (``node.config.api``) inside the block; yields its base URL."""
    async with trio.open_nursery() as nursery:
        node.api_url = await nursery.start(serve_api, node)
        try:
            yield node.api_url
        finally:
            node.api_url = None
            nursery.cancel_scope.cancel()
