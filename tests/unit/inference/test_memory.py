"""Variant choice and eviction order (pure functions; no model needed)."""

from __future__ import annotations

import pytest

from peerllm.inference.memory import (
    CacheEntry,
    choose_variant,
    estimate_memory_bytes,
    eviction_order,
    kv_cache_bytes,
    normalize_quant,
    pick_victims,
)
from peerllm.inference.specs import quant_from_filename

GB = 1024**3


def test_quant_names_normalised() -> None:
    assert normalize_quant("q4_k_m") == "Q4_K_M"
    assert normalize_quant(" iq2-m ") == "IQ2_M"
    assert normalize_quant("Q4_K_MM") is None


@pytest.mark.parametrize(("name", "quant"), [
    ("llama-3-8b.Q4_K_M.gguf", "Q4_K_M"),
    ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
    ("mistral_7b_q8_0.gguf", "Q8_0"),
    ("phi-3-mini-IQ3_M.gguf", "IQ3_M"),
    ("model-f16.gguf", "F16"),
    ("model.gguf", None),
])
def test_quant_from_filename(name: str, quant: str | None) -> None:
    assert quant_from_filename(name) == quant


def test_estimate_is_weights_plus_kv_per_context() -> None:
    size = 4 * GB
    one = estimate_memory_bytes(size, 4096)
    assert one == int(size * 1.2) + kv_cache_bytes(size, 4096)
    assert estimate_memory_bytes(size, 4096, contexts=2) == one + kv_cache_bytes(size, 4096)
    assert kv_cache_bytes(100, 1000) == 16 * 1024 * 1000  # floor for tiny models


SIZES = [("Q4_K_M", 4 * GB), ("Q8_0", 8 * GB), ("Q2_K", 3 * GB), ("Q6_K", 6 * GB)]


def limit_for(size: int) -> int:
    return estimate_memory_bytes(size, 2048)


def test_best_quality_that_fits_is_chosen() -> None:
    def pick(limit: int) -> int | None:
        return choose_variant(SIZES, context_size=2048, contexts=1, limit_bytes=limit)

    assert pick(100 * GB) == 1  # Q8_0
    assert pick(limit_for(8 * GB) - 1) == 3  # Q6_K
    assert pick(limit_for(6 * GB) - 1) == 0  # Q4_K_M
    assert pick(limit_for(4 * GB)) == 0
    assert pick(limit_for(4 * GB) - 1) == 2  # Q2_K
    assert pick(limit_for(3 * GB) - 1) is None


def test_unknown_quant_ranks_last() -> None:
    sizes = [(None, GB), ("IQ2_M", GB)]
    assert choose_variant(sizes, context_size=512, contexts=1, limit_bytes=100 * GB) == 1


def entry(model_id: str, *, loaded_at: float, last_used: float, uses: int,
          memory: int = GB) -> CacheEntry:
    return CacheEntry(model_id=model_id, memory_bytes=memory, loaded_at=loaded_at,
                      last_used=last_used, uses=uses)


ENTRIES = [
    entry("a", loaded_at=1, last_used=50, uses=9),
    entry("b", loaded_at=2, last_used=10, uses=5),
    entry("c", loaded_at=3, last_used=30, uses=1),
]


@pytest.mark.parametrize(("policy", "order"), [
    ("lru", ["b", "c", "a"]), ("lfu", ["c", "b", "a"]), ("fifo", ["a", "b", "c"])])
def test_eviction_order(policy: str, order: list[str]) -> None:
    assert [e.model_id for e in eviction_order(ENTRIES, policy)] == order


def test_lfu_ties_fall_back_to_lru() -> None:
    tied = [entry("x", loaded_at=1, last_used=9, uses=2), entry("y", loaded_at=2, last_used=3,
                                                                uses=2)]
    assert [e.model_id for e in eviction_order(tied, "lfu")] == ["y", "x"]


def test_pick_victims_takes_the_fewest_needed() -> None:
    assert pick_victims(ENTRIES, need_bytes=0, policy="lru") == []
    assert [e.model_id for e in pick_victims(ENTRIES, need_bytes=1, policy="lru") or []] == ["b"]
    assert [e.model_id for e in pick_victims(ENTRIES, need_bytes=GB + 1, policy="lru")
            or []] == ["b", "c"]
    assert pick_victims(ENTRIES, need_bytes=3 * GB + 1, policy="lru") is None


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        eviction_order(ENTRIES, "random")
