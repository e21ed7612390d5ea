"""Frozen, validated node configuration, and the loaders that build it from YAML, env and flags.

Layers, lowest to highest priority: defaults < config file < environment < CLI flags.
Each layer is a nested mapping shaped like the YAML file; the CLI merges them with
``merge_layers`` and validates the result once with ``config_from_mapping``::

    cfg = config_from_mapping(merge_layers(load_yaml_config(path), config_from_env(env), flags))

Every check raises ConfigError whose ``key`` is the dotted setting name (``p2p.listen``),
or the environment variable's name for values that fail to parse there. Nothing in here
reads ``os.environ``: the environment is a parameter of ``config_from_env``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import multiaddr
import multiaddr.exceptions
import yaml

from .errors import ConfigError

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 7471
DEFAULT_P2P_PORT: Final = 7470
# Peers reject DHT records that live longer than this (wire/records.py MAX_RECORD_TTL_S).
MAX_RECORD_TTL_S: Final = 24 * 3600.0

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_QUOTE_HINT: Final = " (quote the value in YAML)"


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class NodeIdentityConfig:
    """Section ``node``: how this node presents itself. The name is checked by identity/."""

    name: str | None = None  # friendly DNS-label name; None = generate once, then keep
    id: str | None = None  # node UUID; None = keep the stored one (uuid4 on first start)
    location: str | None = None  # free text, e.g. "rack-2"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "name", _opt_str("node.name", self.name))
        if self.id is not None:
            text = _str("node.id", self.id).strip()
            try:
                _set(self, "id", str(uuid.UUID(text)))
            except ValueError:
                raise ConfigError("node.id", f"{text!r} is not a UUID") from None
        _set(self, "location", _opt_str("node.location", self.location))
        _set(self, "tags", _str_tuple("node.tags", self.tags))


@dataclass(frozen=True, kw_only=True)
class P2PConfig:
    """Section ``p2p``: the libp2p host, its peers and its timers."""

    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}",)  # TCP multiaddrs
    announce: tuple[str, ...] = ()  # addresses to advertise instead of the listen ones
    bootstrap: tuple[str, ...] = ()  # full multiaddrs ending in /p2p/<peer-id>
    network_key: str | None = None  # private-network key, 64 hex chars; None = public
    dial_timeout_s: float = 5.0
    call_timeout_s: float = 5.0
    heartbeat_interval_s: float = 5.0
    heartbeat_misses: int = 2  # missed heartbeats before a peer counts as down
    peer_stale_s: float = 30.0  # unheard-from peers are dropped after this
    max_peers: int = 200

    def __post_init__(self) -> None:
        listen = _multiaddrs("p2p.listen", self.listen, need_tcp=True)
        if not listen:
            raise ConfigError("p2p.listen", "at least one listen address is needed")
        _set(self, "listen", listen)
        _set(self, "announce", _multiaddrs("p2p.announce", self.announce, need_tcp=True))
        _set(self, "bootstrap", _multiaddrs("p2p.bootstrap", self.bootstrap, need_peer_id=True))
        if self.network_key is not None:
            key = self.network_key
            if not isinstance(key, str):
                raise ConfigError(
                    "p2p.network_key",
                    f"must be a string of 64 hex characters, got {type(key).__name__}"
                    + _QUOTE_HINT,
                )
            if not _HEX64.fullmatch(key.strip()):
                raise ConfigError(
                    "p2p.network_key",
                    f"must be exactly 64 hex characters (0-9, a-f), got {len(key.strip())} "
                    "characters; generate one with: openssl rand -hex 32",
                )
            _set(self, "network_key", key.strip().lower())
        for name in ("dial_timeout_s", "call_timeout_s", "heartbeat_interval_s",
                     "peer_stale_s"):
            _set(self, name, _positive_float(f"p2p.{name}", getattr(self, name)))
        _set(self, "heartbeat_misses", _int("p2p.heartbeat_misses", self.heartbeat_misses, 1))
        _set(self, "max_peers", _int("p2p.max_peers", self.max_peers, 1))


@dataclass(frozen=True, kw_only=True)
class DiscoveryConfig:
    """Section ``discovery``: how peers are found (besides ``p2p.bootstrap``)."""

    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()  # IP addresses to announce on; () = all interfaces
    dht: bool = True
    dht_republish_s: float = 300.0
    record_ttl_s: float = 3600.0  # lifetime of our signed DHT records
    known_peers_max: int = 64  # size of the persisted last-known-peers cache

    def __post_init__(self) -> None:
        _set(self, "mdns", _bool("discovery.mdns", self.mdns))
        interfaces = _str_tuple("discovery.mdns_interfaces", self.mdns_interfaces)
        for address in interfaces:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(
                    "discovery.mdns_interfaces", f"{address!r} is not an IP address"
                ) from None
        _set(self, "mdns_interfaces", interfaces)
        _set(self, "dht", _bool("discovery.dht", self.dht))
        _set(self, "dht_republish_s", _positive_float("discovery.dht_republish_s",
                                                      self.dht_republish_s))
        _set(self, "record_ttl_s", _positive_float("discovery.record_ttl_s", self.record_ttl_s))
        _set(self, "known_peers_max", _int("discovery.known_peers_max", self.known_peers_max, 1))
        if self.record_ttl_s > MAX_RECORD_TTL_S:
            raise ConfigError("discovery.record_ttl_s",
                              f"must be at most {MAX_RECORD_TTL_S:.0f} (peers reject longer)")
        if self.dht_republish_s >= self.record_ttl_s:
            raise ConfigError(
                "discovery.dht_republish_s",
                f"must be less than discovery.record_ttl_s ({self.record_ttl_s:g}), or "
                "records expire before they are republished",
            )


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """Section ``api``: the local HTTP API (OpenAI/Ollama-style endpoints)."""

    host: str = DEFAULT_API_HOST  # interface to bind; loopback unless told otherwise
    port: int = DEFAULT_API_PORT  # 0 = any free port

    def __post_init__(self) -> None:
        host = _str("api.host", self.host)
        if host.startswith("[") and host.endswith("]"):  # "[::1]" -> "::1"
            host = host[1:-1]
        if not host or any(c.isspace() or c in "/[]" for c in host):
            raise ConfigError("api.host", f"{self.host!r} is not a host name or IP address")
        _set(self, "host", host)
        _set(self, "port", _int("api.port", self.port, 0, 65535))


@dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    """Section ``models``: what this node serves."""

    serve_default: bool = True  # serve the bundled default model
    paths: tuple[str, ...] = ()  # extra GGUF model files

    def __post_init__(self) -> None:
        _set(self, "serve_default", _bool("models.serve_default", self.serve_default))
        _set(self, "paths", _str_tuple("models.paths", self.paths))


STRATEGIES: Final = ("mcda", "round_robin", "weighted_round_robin", "least_connections",
                     "latency", "random")


@dataclass(frozen=True, kw_only=True)
class SchedulingSettings:
    """Section ``scheduling``: how this node chooses where a request runs."""

    strategy: str = "mcda"  # one of STRATEGIES
    weight_free_memory: float = 0.40  # MCDA weights; normalised to sum 1
    weight_load: float = 0.30
    weight_latency: float = 0.20
    weight_throughput: float = 0.10
    tie_epsilon: float = 0.05  # scores this close to the best are a near-tie (anti-herding)
    affinity: bool = True  # requests with one session key prefer the peer that served the last
    breaker_failure_threshold: int = 3  # consecutive failures that open a peer's breaker
    breaker_cooldown_s: float = 30.0  # open -> half-open after this long
    breaker_half_open_successes: int = 2  # half-open -> closed after this many successes
    breaker_trial_timeout_s: float = 10.0  # a half-open trial with no answer by then failed
    first_token_timeout_s: float = 60.0  # per queued request ahead (scheduling.timeouts)
    stall_timeout_s: float = 15.0  # cap on a remote stream's silence mid-way (scheduling.timeouts)

    def __post_init__(self) -> None:
        strategy = _str("scheduling.strategy", self.strategy)
        if strategy not in STRATEGIES:
            raise ConfigError("scheduling.strategy",
                              f"{strategy!r} is not one of " + ", ".join(STRATEGIES))
        total = 0.0
        for name in ("weight_free_memory", "weight_load", "weight_latency", "weight_throughput"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                    or not math.isfinite(value):
                raise ConfigError(f"scheduling.{name}",
                                  f"expected a number >= 0, got {value!r}")
            _set(self, name, float(value))
            total += float(value)
        if total <= 0:
            raise ConfigError("scheduling.weight_free_memory",
                              "at least one MCDA weight must be > 0")
        eps = self.tie_epsilon
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps <= 1:
            raise ConfigError("scheduling.tie_epsilon", f"expected 0..1, got {eps!r}")
        _set(self, "tie_epsilon", float(eps))
        _set(self, "affinity", _bool("scheduling.affinity", self.affinity))
        _set(self, "breaker_failure_threshold",
             _int("scheduling.breaker_failure_threshold", self.breaker_failure_threshold, 1))
        _set(self, "breaker_half_open_successes",
             _int("scheduling.breaker_half_open_successes", self.breaker_half_open_successes,
                  1))
        for name in ("breaker_cooldown_s", "breaker_trial_timeout_s", "first_token_timeout_s",
                     "stall_timeout_s"):
            _set(self, name, _positive_float(f"scheduling.{name}", getattr(self, name)))


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a node needs to start. Construct directly, or via ``from_yaml``."""

    data_dir: Path | None = None  # None = the platform default (identity.default_data_dir)
    log_level: str = "info"  # debug | info | warning | error
    node: NodeIdentityConfig = field(default_factory=NodeIdentityConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            value: object = self.data_dir
            if not isinstance(value, str | os.PathLike) or not os.fspath(value):
                raise ConfigError("data_dir", f"expected a directory path, got {value!r}")
            # expanduser: YAML files are not shell-expanded, and "~/..." is what people write.
            _set(self, "data_dir", Path(value).expanduser())
        level = _str("log_level", self.log_level).lower()
        if level not in LOG_LEVELS:
            raise ConfigError("log_level", f"{self.log_level!r} is not one of "
                              + ", ".join(LOG_LEVELS))
        _set(self, "log_level", level)
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, f"expected a {cls.__name__}, "
                                  f"got {type(getattr(self, name)).__name__}")

    @classmethod
    def from_yaml(cls, path: Path) -> NodeConfig:
        """Load and validate a YAML config file (no env, no flags).

        Raises:
            ConfigError: the file is missing, unreadable or invalid.
        """
        return config_from_mapping(load_yaml_config(path), source=str(path))


_SECTIONS: Final[dict[str, type[Any]]] = {
    "node": NodeIdentityConfig,
    "p2p": P2PConfig,
    "discovery": DiscoveryConfig,
    "api": ApiConfig,
    "models": ModelsConfig,
    "scheduling": SchedulingSettings,
}


# --------------------------------------------------------------------------- building


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
        return _build(data)
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.message} (from {source})") from None


def _build(data: Mapping[str, Any]) -> NodeConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"expected a mapping of settings, got {type(data).__name__}")
    top = _known_keys("", data, NodeConfig)
    kwargs: dict[str, Any] = {}
    for key, value in top.items():
        if key in _SECTIONS:
            if value is None:  # "p2p:" with nothing under it
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected a mapping of settings, got "
                                  f"{type(value).__name__}")
            kwargs[key] = _SECTIONS[key](**_known_keys(key, value, _SECTIONS[key]))
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


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


ALL_KEYS: Final[tuple[str, ...]] = tuple(
    _dotted(section, f.name)
    for section, cls in (("", NodeConfig), *_SECTIONS.items())
    for f in dataclasses.fields(cls)
    if not (section == "" and f.name in _SECTIONS)
)
"""Every valid dotted setting name, e.g. ``"p2p.listen"``."""


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


# --------------------------------------------------------------------------- YAML


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


# --------------------------------------------------------------------------- environment

ENV_VARS: Final[Mapping[str, str]] = {
    "PEERLLM_DATA_DIR": "data_dir",
    "PEERLLM_NODE_NAME": "node.name",
    "NODE_NAME": "node.name (alias; PEERLLM_NODE_NAME wins)",
    "NODE_ID": "node.id",
    "NODE_LOCATION": "node.location",
    "NODE_TAGS": "node.tags (comma-separated)",
    "PEERLLM_LISTEN": "p2p.listen (comma-separated)",
    "PEERLLM_BOOTSTRAP": "p2p.bootstrap (comma-separated)",
    "PEERLLM_NETWORK_KEY": "p2p.network_key",
    "PEERLLM_MDNS": "discovery.mdns (1/0, true/false, yes/no, on/off)",
    "PEERLLM_API": "api.host and api.port (HOST:PORT)",
    "PEERLLM_LOG_LEVEL": "log_level",
}
"""The environment variables ``config_from_env`` reads, and the settings they set."""

_ENV_STRINGS: Final = (
    ("PEERLLM_DATA_DIR", "data_dir"),
    ("NODE_NAME", "node.name"),
    ("PEERLLM_NODE_NAME", "node.name"),  # after NODE_NAME, so it wins
    ("NODE_ID", "node.id"),
    ("NODE_LOCATION", "node.location"),
    ("PEERLLM_NETWORK_KEY", "p2p.network_key"),
    ("PEERLLM_LOG_LEVEL", "log_level"),
)
_ENV_LISTS: Final = (
    ("NODE_TAGS", "node.tags"),
    ("PEERLLM_LISTEN", "p2p.listen"),
    ("PEERLLM_BOOTSTRAP", "p2p.bootstrap"),
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the settings given by environment variables, as a partial nested mapping.

    See ``ENV_VARS`` for the variables. Values are trimmed; a variable that is unset or
    blank is ignored. List variables are comma-separated with empty items dropped.
    The result is validated later, by ``config_from_mapping``.

    Raises:
        ConfigError: ``PEERLLM_MDNS`` or ``PEERLLM_API`` cannot be parsed; ``key`` is the
            variable's name.
    """
    layer: dict[str, Any] = {}

    def put(dotted: str, value: Any) -> None:
        section, _, key = dotted.rpartition(".")
        (layer.setdefault(section, {}) if section else layer)[key] = value

    def get(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    for name, dotted in _ENV_STRINGS:
        if (value := get(name)) is not None:
            put(dotted, value)
    for name, dotted in _ENV_LISTS:
        if (value := get(name)) is not None:
            put(dotted, [item.strip() for item in value.split(",") if item.strip()])
    if (value := get("PEERLLM_MDNS")) is not None:
        if value.lower() not in _TRUE | _FALSE:
            raise ConfigError("PEERLLM_MDNS", f"{value!r} is not one of 1/0, true/false, "
                              "yes/no, on/off")
        put("discovery.mdns", value.lower() in _TRUE)
    if (value := get("PEERLLM_API")) is not None:
        try:
            host, port = parse_api_address(value)
        except ConfigError as exc:
            raise ConfigError("PEERLLM_API", exc.message) from None
        put("api.host", host)
        put("api.port", port)
    return layer


def parse_api_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``:PORT`` (host 127.0.0.1) or ``[IPv6]:PORT``; port 0 = any.

    An ``http://`` prefix and a trailing ``/`` are tolerated, so the API's base URL
    (what the client commands take) also works.

    Raises:
        ConfigError: key ``"api"``; the text is not such an address.
    """
    if not isinstance(text, str):
        raise ConfigError("api", f"expected HOST:PORT, got {type(text).__name__}")
    rest = text.strip()
    if rest.lower().startswith("http://"):
        rest = rest[len("http://"):].removesuffix("/")
    if "/" in rest:
        raise ConfigError("api", f"{text!r} is not HOST:PORT (only plain http:// base URLs "
                          "are accepted)")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ConfigError("api", f"{text!r} is not [IPv6]:PORT")
        port_text = port_text[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError("api", f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise ConfigError("api", f"{text!r} has no port; expected HOST:PORT, e.g. "
                              f"{DEFAULT_API_HOST}:{DEFAULT_API_PORT}")
        if ":" in host:
            raise ConfigError("api", f"{text!r}: put IPv6 addresses in brackets, e.g. "
                              f"[::1]:{DEFAULT_API_PORT}")
        host = host or DEFAULT_API_HOST
    if any(c.isspace() for c in host):
        raise ConfigError("api", f"{host!r} is not a host name or IP address")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ConfigError("api", f"port {port_text!r} in {text!r} is not a number from 0 to "
                          "65535")
    return host, int(port_text)


# --------------------------------------------------------------------------- value checks


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


def _str(key: str, value: object) -> str:
    if not isinstance(value, str):
        hint = _QUOTE_HINT if isinstance(value, int | float | bool) else ""
        raise ConfigError(key, f"expected a string, got {type(value).__name__}{hint}")
    return value


def _opt_str(key: str, value: object) -> str | None:
    if value is None:
        return None
    text = _str(key, value).strip()
    if not text:
        raise ConfigError(key, "must not be empty (leave it out to use the default)")
    return text


def _str_tuple(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"expected a list of strings, got {type(value).__name__}")
    items = []
    for i, item in enumerate(value, start=1):
        if not isinstance(item, str):
            hint = _QUOTE_HINT if isinstance(item, int | float) else ""
            raise ConfigError(key, f"item {i} should be a string, got {type(item).__name__}"
                              f"{hint}")
        if not item.strip():
            raise ConfigError(key, f"item {i} is empty")
        items.append(item.strip())
    return tuple(items)


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def _positive_float(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected a number of seconds, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, f"must be a finite number > 0, got {value!r}")
    return float(value)


def _int(key: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected a whole number, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(key, f"must be {bounds}, got {value}")
    return value


def _multiaddrs(
    key: str, value: object, *, need_tcp: bool = False, need_peer_id: bool = False
) -> tuple[str, ...]:
    addrs = _str_tuple(key, value)
    for text in addrs:
        try:
            protocols = [p.name for p in multiaddr.Multiaddr(text).protocols()]
        except (ValueError, multiaddr.exceptions.Error) as exc:
            raise ConfigError(key, f"{text!r} is not a valid multiaddr: {exc}") from None
        if need_tcp and "tcp" not in protocols:
            raise ConfigError(key, f"{text!r} has no /tcp/<port> part "
                              f"(e.g. /ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT})")
        if need_peer_id and protocols[-1:] != ["p2p"]:
            raise ConfigError(key, f"{text!r} must end in /p2p/<peer-id>")
    return addrs
