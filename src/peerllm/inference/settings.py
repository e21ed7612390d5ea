"""Settings of the local inference engine (InferenceConfig) and their environment variables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from ..errors import ConfigError

EvictionPolicy = Literal["lru", "lfu", "fifo"]
EVICTION_POLICIES: Final[tuple[str, ...]] = get_args(EvictionPolicy)

# Dotted prefix of every ConfigError key raised here ("inference.max_queue"); the node
# config nests InferenceConfig under this section name.
SECTION: Final = "inference"

# Share of total RAM the model cache may use when cache_size_gb is not set.
DEFAULT_CACHE_FRACTION: Final = 0.75
GIB: Final = 1024**3


@dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """How the local engine loads and runs models. Validated on construction.

    Raises:
        ConfigError: a value has the wrong type or is out of range; ``key`` is
            ``inference.<field>``.
    """

    models_dir: Path | None = None  # relative model paths (models.yaml, --model) resolve here
    models_config_path: Path | None = None  # a models.yaml file (see configs/models.example.yaml)
    preload: tuple[str, ...] = ()  # model ids loaded at start, in the background
    default_model: str | None = None  # served when a request names no model; None = first model
    cache_size_gb: float | None = None  # memory budget for loaded models; None = 75% of RAM
    max_concurrent: int = 1  # generations running at once per model (one llama context each)
    max_queue: int = 8  # requests waiting per model before ModelBusy
    eviction_policy: EvictionPolicy = "lru"  # which idle model to unload when the budget is full
    load_timeout_s: float = 120.0
    inference_timeout_s: float = 300.0  # per request: queueing, loading and generation
    warmup_tokens: int = 16  # self-benchmark after each load; 0 = skip
    n_threads: int | None = None  # llama.cpp threads; None = half the cores (llama default)
    # llama.cpp "extra buffer types" (weight repacking, incl. AMX). Off by default: with it
    # on, generation segfaults in ggml_backend_amx_mul_mat on some Xeon CPUs.
    use_extra_bufts: bool = False
    gpu_layers: int = 0  # default for models that do not say; -1 = all layers
    context_size: int = 2048  # default for models that do not say

    def __post_init__(self) -> None:
        _set(self, "models_dir", _opt_path("models_dir", self.models_dir))
        _set(self, "models_config_path", _opt_path("models_config_path",
                                                   self.models_config_path))
        _set(self, "preload", _str_tuple("preload", self.preload))
        if self.default_model is not None and (not isinstance(self.default_model, str)
                                               or not self.default_model.strip()):
            raise _err("default_model", f"expected a model id, got {self.default_model!r}")
        if self.cache_size_gb is not None:
            _set(self, "cache_size_gb", _float("cache_size_gb", self.cache_size_gb, minimum=0.0,
                                               exclusive=True))
        _set(self, "max_concurrent", _int("max_concurrent", self.max_concurrent, 1))
        _set(self, "max_queue", _int("max_queue", self.max_queue, 0))
        if self.eviction_policy not in EVICTION_POLICIES:
            raise _err("eviction_policy", f"{self.eviction_policy!r} is not one of "
                       + ", ".join(EVICTION_POLICIES))
        _set(self, "load_timeout_s", _float("load_timeout_s", self.load_timeout_s, minimum=0.0,
                                            exclusive=True))
        _set(self, "inference_timeout_s", _float("inference_timeout_s", self.inference_timeout_s,
                                                 minimum=0.0, exclusive=True))
        _set(self, "warmup_tokens", _int("warmup_tokens", self.warmup_tokens, 0))
        if self.n_threads is not None:
            _set(self, "n_threads", _int("n_threads", self.n_threads, 1))
        if not isinstance(self.use_extra_bufts, bool):
            raise _err("use_extra_bufts", f"expected true or false, got {self.use_extra_bufts!r}")
        _set(self, "gpu_layers", _int("gpu_layers", self.gpu_layers, -1))
        _set(self, "context_size", _int("context_size", self.context_size, 16))

    def cache_size_bytes(self, total_ram_bytes: int) -> int:
        """The memory budget for loaded models on a machine with this much RAM."""
        if self.cache_size_gb is not None:
            return int(self.cache_size_gb * GIB)
        return int(total_ram_bytes * DEFAULT_CACHE_FRACTION)


# --------------------------------------------------------------------------- environment

# env var -> (field, parser). Parsers raise ValueError with a human message.
def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_path(text: str) -> Path:
    return Path(text).expanduser()


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def _parse_policy(text: str) -> str:
    value = text.strip().lower()
    if value not in EVICTION_POLICIES:
        raise ValueError(f"{text!r} is not one of " + ", ".join(EVICTION_POLICIES))
    return value


ENV_VARS: Final[dict[str, tuple[str, Any]]] = {
    "MODELS_DIR": ("models_dir", _parse_path),
    "MODELS_CONFIG_PATH": ("models_config_path", _parse_path),
    "MODEL_PRELOAD": ("preload", _parse_list),
    "MODEL_DEFAULT": ("default_model", str.strip),
    "MODEL_CACHE_SIZE_GB": ("cache_size_gb", _parse_float),
    "MODEL_MAX_CONCURRENT": ("max_concurrent", _parse_int),
    "MODEL_MAX_QUEUE": ("max_queue", _parse_int),
    "MODEL_EVICTION_POLICY": ("eviction_policy", _parse_policy),
    "MODEL_LOAD_TIMEOUT_SECONDS": ("load_timeout_s", _parse_float),
    "MODEL_INFERENCE_TIMEOUT_SECONDS": ("inference_timeout_s", _parse_float),
    "MODEL_WARMUP_TOKENS": ("warmup_tokens", _parse_int),
    "MODEL_THREADS": ("n_threads", _parse_int),
    "MODEL_USE_EXTRA_BUFTS": ("use_extra_bufts", _parse_bool),
    "MODEL_GPU_LAYERS": ("gpu_layers", _parse_int),
    "MODEL_CONTEXT_SIZE": ("context_size", _parse_int),
}


def inference_config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The InferenceConfig fields set by environment variables (see ``ENV_VARS``).

    Unset and empty variables are left out, so the result can be layered over a config
    file. Values are parsed and range-checked here so that a bad value names the
    variable, not the field.

    Raises:
        ConfigError: a variable does not parse or is out of range; ``key`` is the
            variable's name (``MODEL_MAX_CONCURRENT``).
    """
    out: dict[str, Any] = {}
    for env_name, (field_name, parse) in ENV_VARS.items():
        text = environ.get(env_name)
        if text is None or not text.strip():
            continue
        try:
            value = parse(text)
            # Range checks live in InferenceConfig; run them on this one field.
            InferenceConfig(**{field_name: value})
        except ValueError as exc:
            raise ConfigError(env_name, str(exc)) from None
        except ConfigError as exc:
            raise ConfigError(env_name, exc.message) from None
        out[field_name] = value
    return out


# --------------------------------------------------------------------------- validators


def _err(name: str, message: str) -> ConfigError:
    return ConfigError(f"{SECTION}.{name}", message)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(name, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise _err(name, f"must be >= {minimum}, got {value}")
    return value


def _float(name: str, value: object, *, minimum: float, exclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(name, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
        raise _err(name, f"must be {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
    return number


def _opt_path(name: str, value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise _err(name, f"expected a path, got {value!r}")
    return Path(value).expanduser()


def _str_tuple(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _err(name, f"expected a list of model ids, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _err(name, f"expected model ids, got {item!r}")
    return tuple(item.strip() for item in value)

