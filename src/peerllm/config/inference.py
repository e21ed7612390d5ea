"""Section ``inference`` of NodeConfig: how the local engine loads and runs models."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from ..errors import ConfigError
from .validate import (
    boolean,
    choice,
    fraction,
    integer,
    opt_path,
    opt_str,
    positive_float,
    set_field,
    str_tuple,
)

EvictionPolicy = Literal["lru", "lfu", "fifo"]
EVICTION_POLICIES: Final[tuple[str, ...]] = get_args(EvictionPolicy)

# Share of total RAM the model cache may use when cache_size_gb is not set.
DEFAULT_CACHE_FRACTION: Final = 0.75
MAX_PARALLEL: Final = 64  # sequences in one batched llama context (llama.cpp allows 256)
# Slots ``parallel: auto`` aims for, before the memory budget and the backend cut it down.
# llama-server's own auto is 4. On the bundled model on a 2-core CPU
# (scripts/bench/batching.py, tokens per CPU-second vs one stream) 4 streams gave 1.43x
# and 8 gave 1.84x, but at 8 each stream ran at half the speed of 4 and its first token
# took ~2 s: 4 is where more aggregate stops being worth the users' latency.
AUTO_PARALLEL: Final = 4
Parallel = int | Literal["auto"]
"""Batched sequences per model: a number, or "auto" (resolved when the model loads)."""
GIB: Final = 1024**3


@dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """Section ``inference``: how the local engine loads and runs models.

    Validated on construction, like every section.

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
    max_queue: int = 8  # requests waiting per model before ModelBusy (ours counted apart)
    # Sequences a generative model decodes together in one llama context (continuous
    # batching, inference/batched.py); a model's spec may say otherwise. 1 = one llama
    # context per running request, max_concurrent of them. "auto" = AUTO_PARALLEL cut to
    # what the memory budget holds and the backend can batch, resolved at each load.
    parallel: Parallel = "auto"
    # Share of a model's slots that peers' requests may hold at once (0 < share <= 1;
    # at least one slot). Our own requests always go first in the queue (priority.py).
    peer_share: float = 1.0
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
        for name in ("models_dir", "models_config_path"):
            set_field(self, name, opt_path(f"inference.{name}", getattr(self, name)))
        set_field(self, "preload", str_tuple("inference.preload", self.preload))
        set_field(self, "default_model", opt_str("inference.default_model", self.default_model))
        if self.cache_size_gb is not None:
            set_field(self, "cache_size_gb", positive_float(
                "inference.cache_size_gb", self.cache_size_gb, what="a number of GiB"))
        set_field(self, "max_concurrent", integer("inference.max_concurrent",
                                                  self.max_concurrent, 1))
        set_field(self, "max_queue", integer("inference.max_queue", self.max_queue, 0))
        set_field(self, "parallel", parse_parallel("inference.parallel", self.parallel))
        set_field(self, "peer_share", fraction("inference.peer_share", self.peer_share,
                                               high=1.0))
        if self.peer_share == 0:
            raise ConfigError("inference.peer_share", "must be > 0 (peers always get at "
                              "least one slot; 1 = no slots reserved for our own requests)")
        set_field(self, "eviction_policy", choice("inference.eviction_policy",
                                                  self.eviction_policy, EVICTION_POLICIES,
                                                  fold_case=True))
        for name in ("load_timeout_s", "inference_timeout_s"):
            set_field(self, name, positive_float(f"inference.{name}", getattr(self, name)))
        set_field(self, "warmup_tokens", integer("inference.warmup_tokens",
                                                 self.warmup_tokens, 0))
        if self.n_threads is not None:
            set_field(self, "n_threads", integer("inference.n_threads", self.n_threads, 1))
        set_field(self, "use_extra_bufts", boolean("inference.use_extra_bufts",
                                                   self.use_extra_bufts))
        set_field(self, "gpu_layers", integer("inference.gpu_layers", self.gpu_layers, -1))
        set_field(self, "context_size", integer("inference.context_size",
                                                self.context_size, 16))

    @property
    def peer_slots(self) -> int:
        """How many of a model's ``max_concurrent`` slots peers may hold at once."""
        return self.peer_slots_of(self.max_concurrent)

    def peer_slots_of(self, slots: int) -> int:
        """How many of a model's ``slots`` peers may hold at once."""
        return max(1, math.floor(self.peer_share * slots + 1e-9))

    def cache_size_bytes(self, total_ram_bytes: int) -> int:
        """The memory budget for loaded models on a machine with this much RAM."""
        if self.cache_size_gb is not None:
            return int(self.cache_size_gb * GIB)
        return int(total_ram_bytes * DEFAULT_CACHE_FRACTION)


def parse_parallel(key: str, value: object) -> Parallel:
    """A ``parallel`` setting: "auto" (any case) or a whole number 1..MAX_PARALLEL.

    Raises:
        ConfigError: anything else (the configuration's fault).
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str):
        if not value.strip().isdigit():  # a flag or environment variable gives text
            raise ConfigError(key, f"expected \"auto\" or a whole number, got {value!r}")
        value = int(value)
    return integer(key, value, 1, MAX_PARALLEL)
