"""Memory arithmetic for the model cache: size estimates, variant choice, eviction order.

Pure functions: no I/O, no clock (times are parameters), so the policies are unit tested
without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# Quantisations from best to worst quality. A model's variants are tried in this order and
# the first one that fits is loaded.
QUANT_ORDER: Final[tuple[str, ...]] = (
    "F32", "BF16", "F16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0",
    "Q4_K_M", "Q4_K_S", "IQ4_NL", "IQ4_XS", "Q4_1", "Q4_0",
    "Q3_K_L", "Q3_K_M", "IQ3_M", "Q3_K_S", "IQ3_S", "IQ3_XS", "IQ3_XXS",
    "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
)
_RANK: Final = {name: i for i, name in enumerate(QUANT_ORDER)}

WEIGHTS_OVERHEAD: Final = 1.2  # weights in memory ≈ file size × this (buffers, scratch)
# Without reading the GGUF header, the KV cache per context token is guessed from the file
# size: ~18 KiB/token for a 270M model, ~100 KiB/token for an 8B Q4 (grows with layers ×
# KV width, which grow with size). A floor keeps tiny models from being estimated at zero.
KV_BYTES_PER_TOKEN_MIN: Final = 16 * 1024
KV_FILE_BYTES_PER_KV_BYTE: Final = 50_000


def normalize_quant(name: str) -> str | None:
    """The canonical spelling of a quantisation name (``q4_k_m`` -> ``Q4_K_M``), or None."""
    key = name.strip().upper().replace("-", "_")
    return key if key in _RANK else None


def kv_cache_bytes(file_bytes: int, context_size: int) -> int:
    """A rough KV-cache size for one context of ``context_size`` tokens."""
    per_token = max(KV_BYTES_PER_TOKEN_MIN, file_bytes // KV_FILE_BYTES_PER_KV_BYTE)
    return per_token * context_size


def estimate_memory_bytes(file_bytes: int, context_size: int, *, contexts: int = 1) -> int:
    """Memory a loaded model needs: its weights plus one KV cache per llama context."""
    return int(file_bytes * WEIGHTS_OVERHEAD) + contexts * kv_cache_bytes(file_bytes,
                                                                          context_size)


def fitting_slots(file_bytes: int, context_size: int, *, most: int, limit_bytes: int) -> int:
    """The most batch slots (<= ``most``) whose weights plus one KV cache each fit in
    ``limit_bytes`` (``parallel: auto``); at least 1, whether or not that fits."""
    n = max(1, most)
    while n > 1 and estimate_memory_bytes(file_bytes, context_size, contexts=n) > limit_bytes:
        n -= 1
    return n


def quant_rank(quant: str | None) -> int:
    """Position in QUANT_ORDER (lower is better); unknown or None ranks last."""
    return _RANK.get(quant, len(_RANK)) if quant is not None else len(_RANK)


def choose_variant(sizes: Sequence[tuple[str | None, int]], *, context_size: int,
                   contexts: int, limit_bytes: int) -> int | None:
    """Index of the best-quality variant whose estimate fits in ``limit_bytes``, or None.

    Args:
        sizes: (quantisation name or None, file size) per candidate file.
        limit_bytes: what may be used, e.g. min(cache budget, RAM available to us).
    """
    order = sorted(range(len(sizes)), key=lambda i: (quant_rank(sizes[i][0]), i))
    for i in order:
        if estimate_memory_bytes(sizes[i][1], context_size, contexts=contexts) <= limit_bytes:
            return i
    return None


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """What the eviction policy knows about one idle loaded model."""

    model_id: str
    memory_bytes: int
    loaded_at: float  # trio clock
    last_used: float  # trio clock; loaded_at if never used
    uses: int  # requests served since loaded


def eviction_order(entries: Sequence[CacheEntry], policy: str) -> list[CacheEntry]:
    """Idle models, first to evict first. Ties fall back to LRU, then to the model id.

    ``lru``: least recently used; ``lfu``: fewest requests served; ``fifo``: loaded first.
    """
    if policy == "lru":
        return sorted(entries, key=lambda e: (e.last_used, e.loaded_at, e.model_id))
    if policy == "lfu":
        return sorted(entries, key=lambda e: (e.uses, e.last_used, e.model_id))
    if policy == "fifo":
        return sorted(entries, key=lambda e: (e.loaded_at, e.model_id))
    raise ValueError(f"unknown eviction policy {policy!r}")


def pick_victims(entries: Sequence[CacheEntry], *, need_bytes: int,
                 policy: str) -> list[CacheEntry] | None:
    """The fewest idle models, in policy order, whose unloading frees ``need_bytes``.

    Returns [] when nothing needs to go, None when evicting every idle model would still
    not free enough.
    """
    if need_bytes <= 0:
        return []
    victims: list[CacheEntry] = []
    freed = 0
    for entry in eviction_order(entries, policy):
        victims.append(entry)
        freed += entry.memory_bytes
        if freed >= need_bytes:
            return victims
    return None
