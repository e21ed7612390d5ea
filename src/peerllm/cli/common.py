"""Shared CLI plumbing: config layering (defaults < file < env < flags) and logging."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

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


@dataclass(frozen=True)
class ApiTarget:
    """A running node's API and the token to show it (None: send none)."""

    url: str
    token: str | None = field(default=None, repr=False)

    def client(self, *, timeout_s: float = 300.0) -> NodeClient:
        return NodeClient(self.url, timeout_s=timeout_s, token=self.token)


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from ``--token``/``PEERLLM_TOKEN`` or ``--token-file``/``PEERLLM_TOKEN_FILE``.

    Raises:
        click.BadParameter: both given, or the file cannot be read or is empty.
    """
    if token is not None and token_file is not None:
        raise click.BadParameter("give --token or --token-file, not both",
                                 param_hint="--token-file")
    if token_file is None:
        return token.strip() or None if token is not None else None
    try:
        text = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {token_file}: {exc}",
                                 param_hint="--token-file") from exc
    if not text:
        raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
    return text


def api_url_option() -> Callable[[_F], _F]:
    """``--api`` plus ``--token``/``--token-file``; the command gets ``api: ApiTarget``."""

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, api_url: str, token: str | None, token_file: Path | None,
                    **kwargs: Any) -> Any:
            return fn(*args, api=ApiTarget(api_url, read_token(token, token_file)), **kwargs)

        wrapped: Any = click.option(
            "--api", "api_url", envvar="PEERLLM_API", default=DEFAULT_API_URL,
            show_default=True, help="Base URL of a running node's HTTP API.")(wrapper)
        wrapped = click.option(
            "--token", envvar="PEERLLM_TOKEN", show_envvar=True,
            help="Access token for a node that requires auth (prefer --token-file: "
                 "arguments are visible to other local users).")(wrapped)
        wrapped = click.option(
            "--token-file", envvar="PEERLLM_TOKEN_FILE", show_envvar=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help="File holding the access token.")(wrapped)
        return cast(_F, wrapped)

    return decorate


def fetch(api: ApiTarget, path: str, **params: str) -> Any:
    """``GET path`` from the daemon at ``api``; its JSON, or a one-line click error."""

    async def get() -> Any:
        async with api.client(timeout_s=10.0) as client:
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
