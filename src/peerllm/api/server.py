"""Serve a node's HTTP API with hypercorn's trio worker, next to the node in one trio loop.

``open_api(node)`` is how the daemon and library users run it: the API is bound and
``node.api_url`` set when the block is entered, and stops when it is left. With
``api.tls_cert``/``api.tls_key`` it serves https (hypercorn's TLS, HTTP/1.1 and h2 by
ALPN); the pair is loaded and checked before binding. The browser guard (``origin``)
is part of the app whatever the settings.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ..config import ApiConfig
from ..config.keyfiles import warn_if_shared
from ..config.origins import ANY
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
    """Serve until cancelled; ``task_status.started`` gets the base URL once bound
    (``https://`` when ``api.tls_cert`` is set).

    Raises:
        ConfigError: the API would be open to the network without auth (and
            ``auth.insecure_no_auth`` does not say that is wanted); ``api.tls_cert``/
            ``api.tls_key``: the pair cannot be used.
    """
    check_exposure(node.config)
    await _serve(node, server_config(node.config.api), task_status=task_status)


def server_config(api: ApiConfig) -> Config:
    """hypercorn's settings for ``api``, with the TLS pair checked (``check_tls_pair``)."""
    cfg = Config()
    cfg.bind = [f"{_bind_host(api)}:{api.port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("peerllm.api.hypercorn")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30.0
    if api.tls_cert is not None and api.tls_key is not None:
        check_tls_pair(api.tls_cert, api.tls_key)
        cfg.certfile, cfg.keyfile = str(api.tls_cert), str(api.tls_key)
    _warn_about_wildcards(api)
    return cfg


async def _serve(node: Node, cfg: Config, *,
                 task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    async def started(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                      ) -> None:
        await serve(build_app(node), cfg, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started)
        api, scheme = node.config.api, "https" if cfg.ssl_enabled else "http"
        url = binds[0] if binds else f"{scheme}://{_bind_host(api)}:{api.port}"
        logger.info("HTTP API on %s", url)
        task_status.started(url)


def _bind_host(api: ApiConfig) -> str:
    return f"[{api.host}]" if ":" in api.host else api.host


def check_tls_pair(cert: Path, key: Path) -> None:
    """Load ``cert`` with ``key`` as the server will, so a bad pair is a ConfigError naming
    the files before the API binds (hypercorn would fail inside its worker instead).

    An encrypted key is refused here: OpenSSL would otherwise prompt for its passphrase
    on the terminal and hang a daemon.

    Raises:
        ConfigError: ``api.tls_cert``; not PEM, not a pair, encrypted, or unreadable.
    """
    warn_if_shared(key, what="TLS key")

    def no_passphrase() -> str:
        raise _EncryptedKey

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=cert, keyfile=key, password=no_passphrase)
    except _EncryptedKey:
        raise ConfigError("api.tls_key", f"TLS key {key} is encrypted; give an unencrypted "
                          "key file (mode 600)") from None
    except ssl.SSLError as exc:
        raise ConfigError("api.tls_cert", f"cannot use TLS certificate {cert} with key {key}: "
                          f"{exc.reason or exc} (both must be PEM, and the key the "
                          "certificate's)") from None
    except OSError as exc:
        raise ConfigError("api.tls_cert", f"cannot read TLS certificate {cert} or key {key} "
                          f"({exc.strerror or exc})") from None


class _EncryptedKey(Exception):
    """Raised by the passphrase callback: the key needs a passphrase we do not have."""


def _warn_about_wildcards(api: ApiConfig) -> None:
    if ANY in api.cors_origins:
        logger.warning("api.cors_origins allows '*': any web page open in a browser on a "
                       "machine that reaches this API can use it")
    if ANY in api.allowed_hosts:
        logger.warning("api.allowed_hosts allows '*': the Host check is off, so web pages "
                       "can reach this API through DNS rebinding")


@asynccontextmanager
async def open_api(node: Node) -> AsyncIterator[str]:
    """Serve ``node``'s API (``node.config.api``) inside the block; yields its base URL.

    Raises:
        ConfigError: ``api.tls_cert``/``api.tls_key``; the pair cannot be used (raised
            before anything binds, as itself rather than inside an exception group).
    """
    cfg = server_config(node.config.api)
    async with trio.open_nursery() as nursery:
        node.api_url = await nursery.start(functools.partial(_serve, node, cfg))
        try:
            yield node.api_url
        finally:
            node.api_url = None
            nursery.cancel_scope.cancel()
