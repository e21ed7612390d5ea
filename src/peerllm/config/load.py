"""``load_config``: defaults < YAML file < environment < flags, validated once, errors blamed.

This is the whole of what ``peerllm node`` does to get its NodeConfig, usable from a
program too. When a value is refused, the error says which layer gave it: the file's
path, the environment variable (then ``key`` is the variable, as for parse errors, since
that is what the user edits), or the command-line flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .env import read_env
from .layers import load_yaml_config, merge_layers
from .node import NodeConfig, build


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None,
                flags: Mapping[str, Any] | None = None) -> NodeConfig:
    """Merge and validate the layers of settings into one NodeConfig.

    Args:
        path: a YAML config file (see ``configs/node.example.yaml``), or None.
        environ: the environment to read ``ENV_VARS`` from; pass ``os.environ`` to
            honour them. None means none: the process environment is never read here.
        flags: a nested mapping shaped like the YAML file (what the CLI's options give).

    Raises:
        ConfigError: the file cannot be read, or a setting is unknown or invalid. ``key``
            is the dotted setting, or the environment variable when the value came from
            one; the message names the file or says ``command-line flags``.
    """
    file_layer = load_yaml_config(path) if path is not None else {}
    env_layer, env_origins = read_env(environ or {})
    flag_layer = dict(flags or {})
    try:
        return build(merge_layers(file_layer, env_layer, flag_layer))
    except ConfigError as exc:
        if _holds(flag_layer, exc.key):
            raise ConfigError(exc.key, f"{exc.message} (from command-line flags)") from None
        if exc.key in env_origins:
            raise ConfigError(env_origins[exc.key], f"{exc.message} (sets {exc.key})") from None
        if path is not None:
            raise ConfigError(exc.key, f"{exc.message} (from {path})") from None
        raise


def _holds(layer: Mapping[str, Any], dotted: str) -> bool:
    """Whether ``layer`` gives a value for ``dotted`` (``"p2p.listen"``)."""
    node: Any = layer
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
