"""Shared CLI plumbing: config layering (defaults < file < env < flags) and logging."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from ..client import NodeClient
from ..config import (
    NodeConfig,
    config_from_env,
    config_from_mapping,
    load_yaml_config,
    merge_layers,
)
from ..errors import PeerLLMError
from ..inference.settings import InferenceConfig, inference_config_from_env

DEFAULT_API_URL = "http://127.0.0.1:7471"


def build_config(config_path: Path | None, flags: Mapping[str, Any]) -> NodeConfig:
    """Layer the config file, PEERLLM_* / NODE_* env vars and command-line flags."""
    try:
        file_layer = load_yaml_config(config_path) if config_path is not None else {}
        env_layer = config_from_env(os.environ)
        return config_from_mapping(merge_layers(file_layer, env_layer, flags))
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc


def build_inference_config(*, models_config: Path | None = None,
                           preload: tuple[str, ...] = ()) -> InferenceConfig:
    """Engine settings from the MODEL_* / MODELS_* env vars, then flags."""
    try:
        fields = inference_config_from_env(os.environ)
        if models_config is not None:
            fields["models_config_path"] = models_config
        if preload:
            fields["preload"] = tuple(preload)
        return InferenceConfig(**fields)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc


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
