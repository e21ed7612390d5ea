"""Shared CLI plumbing: config layering (defaults < file < env < flags) and logging."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from ..client import NodeClient
from ..config import NodeConfig, load_config
from ..errors import PeerLLMError
from ..identity import default_data_dir

DEFAULT_API_URL = "http://127.0.0.1:7471"


def build_config(config_path: Path | None, flags: Mapping[str, Any]) -> NodeConfig:
    """Layer the config file, the environment (``config.ENV_VARS``) and command-line flags.

    The CLI is where the process environment is read; the returned config always has a
    ``data_dir`` (see ``data_dir_of``), so the library below never needs the environment.
    """
    try:
        cfg = load_config(config_path, environ=os.environ, flags=flags)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc
    return dataclasses.replace(cfg, data_dir=data_dir_of(cfg))


def data_dir_of(cfg: NodeConfig) -> Path:
    """The configured data dir, else the platform's ($XDG_DATA_HOME, %LOCALAPPDATA%)."""
    return cfg.data_dir if cfg.data_dir is not None else default_data_dir(os.environ)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def api_url_option() -> Callable[[_F], _F]:
    return click.option("--api", "api_url", envvar="PEERLLM_API", default=DEFAULT_API_URL,
                        show_default=True, help="Base URL of a running node's HTTP API.")


def fetch(api_url: str, path: str, **params: str) -> Any:
    """``GET path`` from the daemon at ``api_url``; its JSON, or a one-line click error."""

    async def get() -> Any:
        async with NodeClient(api_url, timeout_s=10.0) as client:
            return await client.get(path, **params)

    try:
        return trio.run(get)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc


def console() -> Any:
    """A rich Console; when piped, wide enough that tables are not wrapped into columns."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)
