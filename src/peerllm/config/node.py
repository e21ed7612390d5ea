"""NodeConfig, the whole configuration of a node, and building it from a nested mapping."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..errors import ConfigError
from .audit import AuditConfig
from .auth import AuthConfig
from .inference import InferenceConfig
from .layers import load_yaml_config
from .sections import (
    ApiConfig,
    DiscoveryConfig,
    ModelsConfig,
    NodeIdentityConfig,
    P2PConfig,
    SchedulingSettings,
    is_loopback,
)
from .validate import choice, opt_path, set_field

LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a node needs to start. Construct directly, or via ``from_yaml``."""

    # None = the platform default, identity.default_data_dir(), which open_node reads
    # WITHOUT the environment; the CLI passes default_data_dir(os.environ) instead, so
    # $XDG_DATA_HOME / %LOCALAPPDATA% count there. Embedders wanting that do the same.
    data_dir: Path | None = None
    log_level: str = "info"  # debug | info | warning | error
    node: NodeIdentityConfig = field(default_factory=NodeIdentityConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    def __post_init__(self) -> None:
        set_field(self, "data_dir", opt_path("data_dir", self.data_dir))
        set_field(self, "log_level", choice("log_level", self.log_level, LOG_LEVELS,
                                            fold_case=True))
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, f"expected a {cls.__name__}, "
                                  f"got {type(getattr(self, name)).__name__}")

    @property
    def api_exposed_without_auth(self) -> bool:
        """The API binds beyond loopback while tokens are not required."""
        return not self.auth.required and not is_loopback(self.api.host)

    @classmethod
    def from_yaml(cls, path: Path) -> NodeConfig:
        """Load and validate a YAML config file (no env, no flags).

        Raises:
            ConfigError: the file is missing, unreadable or invalid.
        """
        return config_from_mapping(load_yaml_config(path), source=str(path))


SECTIONS: Final[dict[str, type[Any]]] = {
    "node": NodeIdentityConfig,
    "p2p": P2PConfig,
    "discovery": DiscoveryConfig,
    "api": ApiConfig,
    "models": ModelsConfig,
    "scheduling": SchedulingSettings,
    "inference": InferenceConfig,
    "audit": AuditConfig,
    "auth": AuthConfig,
}
"""Section name (the YAML key) -> its dataclass."""


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


ALL_KEYS: Final[tuple[str, ...]] = tuple(
    _dotted(section, f.name)
    for section, cls in (("", NodeConfig), *SECTIONS.items())
    for f in dataclasses.fields(cls)
    if not (section == "" and f.name in SECTIONS)
)
"""Every valid dotted setting name, e.g. ``"p2p.listen"``."""


def config_from_mapping(data: Mapping[str, Any], *, source: str = "config") -> NodeConfig:
    """Validate a nested mapping shaped like the YAML file and build a NodeConfig.

    Lists are accepted where tuples are expected; anything else must have the declared
    type (YAML ``yes``/``no`` are already booleans; the string ``"maybe"`` is not).

    Args:
        source: where the mapping came from, appended to error messages.

    Raises:
        ConfigError: an unknown key (the message suggests the closest valid one) or an
            invalid value; ``key`` is the full dotted name.
    """
    try:
        return build(data)
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.message} (from {source})") from None


def build(data: Mapping[str, Any]) -> NodeConfig:
    """``config_from_mapping`` without naming a source in errors (``config.load`` does)."""
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"expected a mapping of settings, got {type(data).__name__}")
    top = _known_keys("", data, NodeConfig)
    kwargs: dict[str, Any] = {}
    for key, value in top.items():
        if key in SECTIONS:
            if value is None:  # "p2p:" with nothing under it
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected a mapping of settings, got "
                                  f"{type(value).__name__}")
            kwargs[key] = SECTIONS[key](**_known_keys(key, value, SECTIONS[key]))
        else:
            kwargs[key] = value
    return NodeConfig(**kwargs)


def _known_keys(prefix: str, data: Mapping[Any, Any], cls: type[Any]) -> dict[str, Any]:
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(prefix or "config", f"setting names must be strings, got {key!r}")
        if key not in valid:
            raise ConfigError(_dotted(prefix, key), _unknown_key_message(prefix, key, valid))
    return dict(data)


def _unknown_key_message(prefix: str, key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"unknown setting; did you mean {_dotted(prefix, close[0])!r}?"
    # Right name, wrong level: "name" at the top is "node.name".
    elsewhere = [dotted for dotted in ALL_KEYS if dotted.rpartition(".")[2] == key]
    if elsewhere:
        return f"unknown setting here; did you mean {elsewhere[0]!r}?"
    return "unknown setting; valid here: " + ", ".join(sorted(valid))
