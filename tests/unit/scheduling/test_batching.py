"""scheduling.batching: slot choice with prefix reuse, and what each decode step holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.batching import (
    FreeSlot,
    Joining,
    SlotChoice,
    choose_slot,
    common_prefix,
    passes,
    plan_step,
)

tokens = st.lists(st.integers(0, 5), max_size=12)


@given(tokens, tokens)
def test_common_prefix_is_the_longest_shared_start(a: list[int], b: list[int]) -> None:
    n = common_prefix(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]
    assert common_prefix(b, a) == n


def free_slots(caches: list[list[int]], used: list[int]) -> list[FreeSlot]:
    return [FreeSlot(index=i, cached=tuple(c), last_used=u)
            for i, (c, u) in enumerate(zip(caches, used, strict=False))]


@given(st.lists(tokens, min_size=1, max_size=5), st.lists(st.integers(0, 9), min_size=5,
                                                          max_size=5),
       st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_the_slot_with_the_longest_usable_prefix_wins(caches: list[list[int]],
                                                      used: list[int],
                                                      prompt: list[int]) -> None:
    slots = free_slots(caches, used)
    choice = choose_slot(prompt, slots, min_reuse=1)  # nothing running: plain LRU
    assert choice is not None
    usable = [min(common_prefix(s.cached, prompt), len(prompt) - 1) for s in slots]
    assert choose_slot(prompt, slots, min_reuse=len(prompt) + 1) == \
        choose_slot(prompt, [FreeSlot(index=s.index, cached=(), last_used=s.last_used)
                             for s in slots])  # below min_reuse, a cache counts as none
    assert choice.reuse == max(usable)
    # Rule 1: at least the last prompt token is always decoded again.
    assert choice.reuse <= len(prompt) - 1
    assert tuple(prompt[:choice.reuse]) == slots[choice.index].cached[:choice.reuse]
    # Rule 4, with nothing running: among equals, the least recently used.
    tied = [s for s, u in zip(slots, usable, strict=True) if u == choice.reuse]
    assert slots[choice.index].last_used == min(s.last_used for s in tied)


def test_a_second_chat_turn_takes_the_slot_holding_the_first() -> None:
    first_turn = (2, 10, 11, 12, 13, 14)
    slots = [FreeSlot(index=0, cached=(), last_used=0),
             FreeSlot(index=1, cached=first_turn, last_used=5),
             FreeSlot(index=2, cached=(2, 10, 99), last_used=1)]
    choice = choose_slot((*first_turn, 15, 16), slots, min_reuse=1)
    assert choice is not None and (choice.index, choice.reuse) == (1, 6)
    # Nothing shared: the least recently used (the empty, never used) slot.
    other = choose_slot((7, 8), slots, min_reuse=1)
    assert other is not None and (other.index, other.reuse) == (0, 0)


def test_a_new_request_extends_the_run_of_running_slots() -> None:
    free = [FreeSlot(index=i, cached=(), last_used=i) for i in (0, 3, 6)]
    # Slots 1 and 2 run: slot 3 extends their run (one pass per step), slot 0 would too.
    choice = choose_slot((5, 6), free, busy=(1, 2))
    assert choice is not None and choice.index == 0
    choice = choose_slot((5, 6), free[1:], busy=(1, 2))
    assert choice is not None and choice.index == 3
    # A long prefix cached in a slot that would add a pass is copied next to the run;
    # a short one is not worth copying a whole slot's KV.
    warm = [*free, FreeSlot(index=7, cached=(5, 6, 7), last_used=9)]
    choice = choose_slot((5, 6, 7, 8), warm, busy=(1, 2), min_reuse=1, copy_min=3)
    assert choice == SlotChoice(index=0, reuse=3, source=7)
    choice = choose_slot((5, 6, 7, 8), warm, busy=(1, 2), min_reuse=1, copy_min=4)
    assert choice == SlotChoice(index=0, reuse=0)
    # A warm slot that already sits next to the run is used in place.
    choice = choose_slot((5, 6, 7, 8), [*free, FreeSlot(index=8, cached=(5, 6, 7),
                                                        last_used=9)], busy=(7,),
                         min_reuse=1)
    assert choice == SlotChoice(index=8, reuse=3)


@given(st.lists(tokens, min_size=1, max_size=8), st.sets(st.integers(0, 11), max_size=6),
       st.lists(st.integers(0, 5), min_size=1, max_size=12), st.integers(1, 4))
def test_a_choice_never_adds_a_pass_when_it_need_not(caches: list[list[int]],
                                                     busy: set[int], prompt: list[int],
                                                     copy_min: int) -> None:
    free = [FreeSlot(index=i, cached=tuple(c), last_used=i % 3)
            for i, c in enumerate(caches) if i not in busy]
    choice = choose_slot(prompt, free, busy=busy, min_reuse=1, copy_min=copy_min)
    if not free:
        assert choice is None
        return
    assert choice is not None and choice.index in {s.index for s in free}
    could_stay = any(not busy or {s.index - 1, s.index + 1} & busy for s in free)
    if could_stay:
        assert passes({*busy, choice.index}) <= max(passes(busy), 1)
    cache = {s.index: s.cached for s in free}[choice.source if choice.source is not None
                                              else choice.index]
    assert choice.reuse <= len(prompt) - 1
    assert cache[:choice.reuse] == tuple(prompt[:choice.reuse])
    assert choice.source != choice.index


@given(st.sets(st.integers(0, 15)))
def test_passes_count_runs_of_consecutive_slots(ids: set[int]) -> None:
    runs = passes(ids)
    assert runs == len([i for i in sorted(ids) if i - 1 not in ids])
    assert (runs == 0) == (not ids)
    assert passes(range(len(ids))) == (1 if ids else 0)


def test_an_identical_prompt_still_decodes_its_last_token() -> None:
    choice = choose_slot((1, 2, 3), [FreeSlot(index=0, cached=(1, 2, 3, 4), last_used=1)],
                         min_reuse=1)
    assert choice is not None and choice.reuse == 2


def test_no_free_slot_means_wait() -> None:
    assert choose_slot((1, 2), []) is None


joining = st.lists(st.builds(Joining, seq=st.integers(0, 15), remaining=st.integers(0, 300),
                             order=st.integers(0, 50)), max_size=6, unique_by=lambda j: j.seq)


@given(st.lists(st.integers(16, 31), unique=True, max_size=8), joining,
       st.integers(1, 128), st.integers(8, 512))
def test_a_step_never_stalls_decoding_sequences(decoding: list[int], waiting: list[Joining],
                                                chunk: int, n_batch: int) -> None:
    plan = plan_step(decoding, waiting, chunk=chunk, n_batch=n_batch)
    # Rule 2: every decoding sequence gets its token, the batch never overflows.
    assert plan.decode == tuple(decoding)
    assert plan.n_tokens <= n_batch
    candidates = [j for j in waiting if j.remaining > 0]
    if plan.prefill is None:
        assert plan.prefill_tokens == 0
        assert not candidates or len(decoding) == n_batch
        return
    chosen = next(j for j in candidates if j.seq == plan.prefill)
    # Rule 3: the earliest joiner goes first; the chunk is capped while others decode.
    assert chosen.order == min(j.order for j in candidates)
    assert 1 <= plan.prefill_tokens <= chosen.remaining
    if decoding:
        assert plan.prefill_tokens <= chunk
    assert plan.n_sequences == len(decoding) + 1


def test_a_long_prompt_is_read_in_chunks_while_others_decode() -> None:
    reads = []
    remaining = 150
    while remaining:
        plan = plan_step([1, 2], [Joining(seq=3, remaining=remaining, order=0)], chunk=64,
                         n_batch=512)
        reads.append(plan.prefill_tokens)
        remaining -= plan.prefill_tokens
    assert reads == [64, 64, 22]
    # Alone, it may fill the batch.
    assert plan_step([], [Joining(seq=3, remaining=600, order=0)], chunk=64,
                     n_batch=512).prefill_tokens == 512


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_step([], [], chunk=0, n_batch=8)
    with pytest.raises(ValueError, match="do not fit"):
        plan_step([1, 2, 3], [], chunk=4, n_batch=2)
