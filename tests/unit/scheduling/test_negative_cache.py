"""The negative cache: a miss is remembered for its TTL, bounded, and forgotten when found."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.negative_cache import NegativeCache


def test_a_miss_is_remembered_until_its_ttl_passes() -> None:
    cache = NegativeCache(ttl_s=30.0, max_entries=8)
    assert not cache.missing("m", 0.0)
    cache.note_missing("m", 0.0)
    assert cache.missing("m", 29.9)
    assert not cache.missing("m", 30.0)
    assert len(cache) == 0  # the expired entry is dropped, not kept


def test_found_forgets_a_miss_at_once() -> None:
    cache = NegativeCache(ttl_s=30.0, max_entries=8)
    cache.note_missing("m", 0.0)
    cache.found("m")
    assert not cache.missing("m", 1.0)
    cache.found("never-seen")  # harmless


def test_the_oldest_miss_goes_first_past_the_limit() -> None:
    cache = NegativeCache(ttl_s=30.0, max_entries=2)
    for i, key in enumerate(("a", "b", "c")):
        cache.note_missing(key, float(i))
    assert [cache.missing(k, 3.0) for k in ("a", "b", "c")] == [False, True, True]


def test_a_bad_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        NegativeCache(ttl_s=0.0)


@given(st.lists(st.text(max_size=4), max_size=200), st.integers(1, 16))
def test_never_holds_more_than_its_limit(keys: list[str], limit: int) -> None:
    cache = NegativeCache(ttl_s=30.0, max_entries=limit)
    for i, key in enumerate(keys):
        cache.note_missing(key, float(i) / 100)
        assert len(cache) <= limit
        assert cache.missing(key, float(i) / 100)
