"""Layers of settings before validation: reading a YAML file, and merging layers in order.

A layer is a nested mapping shaped like the YAML file (``{"p2p": {"listen": [...]}}``),
not yet validated. ``config.load`` merges defaults < file < environment < flags and
validates once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


def put_dotted(layer: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` (``"p2p.listen"`` or a top-level ``"log_level"``) in a layer."""
    section, _, key = dotted.rpartition(".")
    (layer.setdefault(section, {}) if section else layer)[key] = value


def merge_layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge nested mappings; later layers win. Lists replace, they do not append.

    Inputs are not modified. Pass ``(file, env, flags)``: flags beat env beats file.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            old = merged.get(key)
            if isinstance(value, Mapping) and isinstance(old, dict):
                merged[key] = merge_layers(old, value)
            elif isinstance(value, Mapping):
                merged[key] = merge_layers(value)
            else:
                merged[key] = value
    return merged


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark,
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_config(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a nested dict (not yet validated). Empty file -> ``{}``.

    Raises:
        ConfigError: key ``"config"``; the file is missing, unreadable, not valid YAML
            (the message gives line and column), has duplicate keys, or its top level
            is not a mapping.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config", f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError("config", f"cannot read config file {path} (permission denied)") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read config file {path} ({exc.strerror or exc})"
                          ) from None
    try:
        doc = yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError("config", f"config file {path} is not valid YAML{where}: {what}"
                          ) from None
    except yaml.YAMLError as exc:  # e.g. undecodable bytes
        raise ConfigError("config", f"config file {path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError("config", f"config file {path} must hold a mapping of settings at the "
                          f"top level, not a {type(doc).__name__}")
    return doc
