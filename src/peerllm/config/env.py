"""Environment variables -> a settings layer: one table of variables, one set of parsers.

The environment is always a parameter (``environ``); nothing in the config package
reads ``os.environ``. Parsing only turns text into the type the setting needs (a
number, a bool, a list); ranges are checked once, by the sections, when the layers are
validated together (``config.load``), which then names the variable too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ConfigError
from .layers import put_dotted
from .sections import DEFAULT_API_HOST, DEFAULT_API_PORT

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _text(text: str) -> str:
    return text


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _bool(text: str) -> bool:
    if text.lower() not in _TRUE | _FALSE:
        raise ValueError(f"{text!r} is not one of 1/0, true/false, yes/no, on/off")
    return text.lower() in _TRUE


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)  # "nan"/"inf" parse; the section refuses them, naming the variable
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _api(text: str) -> dict[str, Any]:
    try:
        host, port = parse_api_address(text)
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    return {"host": host, "port": port}


@dataclass(frozen=True)
class EnvVar:
    """One environment variable and the setting it fills."""

    name: str
    key: str  # dotted setting; a section name when ``parse`` returns several of its keys
    parse: Callable[[str], Any]  # stripped, non-blank text -> value; ValueError if it cannot
    form: str = ""  # how the text is read, for the docs ("comma-separated")


TABLE: Final[tuple[EnvVar, ...]] = (
    EnvVar("PEERLLM_DATA_DIR", "data_dir", _text),
    EnvVar("NODE_NAME", "node.name", _text, "alias; PEERLLM_NODE_NAME wins"),
    EnvVar("PEERLLM_NODE_NAME", "node.name", _text),  # after NODE_NAME, so it wins
    EnvVar("NODE_ID", "node.id", _text),
    EnvVar("NODE_LOCATION", "node.location", _text),
    EnvVar("NODE_TAGS", "node.tags", _list, "comma-separated"),
    EnvVar("PEERLLM_LISTEN", "p2p.listen", _list, "comma-separated"),
    EnvVar("PEERLLM_BOOTSTRAP", "p2p.bootstrap", _list, "comma-separated"),
    EnvVar("PEERLLM_NETWORK_KEY", "p2p.network_key", _text, "64 hex characters"),
    EnvVar("PEERLLM_NETWORK_KEY_FILE", "p2p.network_key_file", _text,
           "a file holding the key"),
    EnvVar("PEERLLM_MDNS", "discovery.mdns", _bool, "1/0, true/false, yes/no, on/off"),
    EnvVar("PEERLLM_API", "api", _api, "host and port, as HOST:PORT"),
    EnvVar("PEERLLM_API_CORS_ORIGINS", "api.cors_origins", _list, "comma-separated"),
    EnvVar("PEERLLM_API_ALLOWED_HOSTS", "api.allowed_hosts", _list, "comma-separated"),
    EnvVar("PEERLLM_API_TLS_CERT", "api.tls_cert", _text),
    EnvVar("PEERLLM_API_TLS_KEY", "api.tls_key", _text),
    EnvVar("PEERLLM_LOG_LEVEL", "log_level", _text),
    EnvVar("PEERLLM_UPLOAD_LIMIT", "models.upload_limit", _float, "MB/s"),
    EnvVar("HF_ENDPOINT", "models.hf_endpoint", _text),
    EnvVar("HF_TOKEN", "models.hf_token", _text, "prefer HF_TOKEN_FILE"),
    EnvVar("HF_TOKEN_FILE", "models.hf_token_file", _text, "a file holding the token"),
    EnvVar("PEERLLM_REQUIRE_AUTH", "auth.required", _bool, "1/0, true/false, yes/no, on/off"),
    EnvVar("PEERLLM_TRUSTED_ISSUERS", "auth.trusted_issuers", _list, "comma-separated"),
    EnvVar("MODELS_DIR", "inference.models_dir", _text),
    EnvVar("MODELS_CONFIG_PATH", "inference.models_config_path", _text),
    EnvVar("MODEL_PRELOAD", "inference.preload", _list, "comma-separated"),
    EnvVar("MODEL_DEFAULT", "inference.default_model", _text),
    EnvVar("MODEL_CACHE_SIZE_GB", "inference.cache_size_gb", _float),
    EnvVar("MODEL_MAX_CONCURRENT", "inference.max_concurrent", _int),
    EnvVar("MODEL_PARALLEL", "inference.parallel", _text, "auto or a whole number"),
    EnvVar("MODEL_MAX_QUEUE", "inference.max_queue", _int),
    EnvVar("MODEL_PEER_SHARE", "inference.peer_share", _float),
    EnvVar("MODEL_EVICTION_POLICY", "inference.eviction_policy", _text),
    EnvVar("MODEL_LOAD_TIMEOUT_SECONDS", "inference.load_timeout_s", _float),
    EnvVar("MODEL_INFERENCE_TIMEOUT_SECONDS", "inference.inference_timeout_s", _float),
    EnvVar("MODEL_WARMUP_TOKENS", "inference.warmup_tokens", _int),
    EnvVar("MODEL_THREADS", "inference.n_threads", _int),
    EnvVar("MODEL_USE_EXTRA_BUFTS", "inference.use_extra_bufts", _bool,
           "1/0, true/false, yes/no, on/off"),
    EnvVar("MODEL_GPU_LAYERS", "inference.gpu_layers", _int),
    EnvVar("MODEL_CONTEXT_SIZE", "inference.context_size", _int),
)
"""Every variable ``config_from_env`` reads, in the order they apply (later wins)."""

ENV_VARS: Final[Mapping[str, str]] = {
    var.name: var.key + (f" ({var.form})" if var.form else "") for var in TABLE
}
"""The environment variables ``config_from_env`` reads, and the settings they set."""


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the settings given by environment variables, as a partial nested mapping.

    See ``ENV_VARS`` for the variables. Values are trimmed; a variable that is unset or
    blank is ignored. List variables are comma-separated with empty items dropped.
    The result is validated later (``load_config`` or ``config_from_mapping``).

    Raises:
        ConfigError: a value cannot be parsed (``PEERLLM_MDNS=maybe``,
            ``MODEL_MAX_QUEUE=lots``); ``key`` is the variable's name.
    """
    return read_env(environ)[0]


def read_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``config_from_env``, plus which variable set each dotted key (to blame it later)."""
    layer: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for var in TABLE:
        text = environ.get(var.name, "").strip()
        if not text:
            continue
        try:
            value = var.parse(text)
        except ValueError as exc:
            raise ConfigError(var.name, f"{exc} (sets {var.key})") from None
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, item in items:
            dotted = f"{var.key}.{sub}" if sub is not None else var.key
            put_dotted(layer, dotted, item)
            origins[dotted] = var.name
    return layer, origins


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
