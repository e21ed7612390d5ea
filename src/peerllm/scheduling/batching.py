"""Continuous-batching decisions for one model's slots: which slot a request takes, how much
of its prompt the KV cache already holds, and what goes into the next decode step; pure.

The batched runtime (``inference/batched.py``) owns the llama context; it asks this module
and does what it says. Nothing here reads a clock or touches llama.cpp, so every rule is
tested with plain values (tests/unit/scheduling/test_batching.py).

Rules:

- Rule 1 (reuse): a request takes the free slot whose cached tokens share the longest
  prefix with its prompt, but always re-reads at least its last prompt token, because the
  logits for the first sampled token come from decoding that token.
- Rule 2 (no stall): every decoding sequence gets exactly one token per step; at most one
  joining sequence gets a prefill chunk, of at most ``chunk`` tokens, and only while the
  step has room (``n_batch``). With nobody decoding, the chunk may fill the batch.
- Rule 3 (fairness): joining sequences prefill in the order they joined.
- Rule 4 (contiguity): among free slots that reuse equally, one next to a running slot
  wins, then the least recently used (warm prefixes live longest). llama.cpp computes a
  step in one pass per run of consecutive slot ids (one KV stream per slot), so a slot
  that extends a run costs nothing, and one that starts a new run costs a pass.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True, slots=True, kw_only=True)
class FreeSlot:
    """A slot with no running sequence; ``cached`` are the tokens its KV cache holds."""

    index: int
    cached: tuple[int, ...]
    last_used: int  # a step counter, larger = more recent (0 = never used)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotChoice:
    """Where a request goes and how many of its leading prompt tokens need no prefill."""

    index: int
    reuse: int


def choose_slot(prompt: Sequence[int], free: Sequence[FreeSlot], *,
                busy: Collection[int] = ()) -> SlotChoice | None:
    """The slot for ``prompt`` (Rule 1, Rule 4), or None when no slot is free.

    ``busy`` are the indices of the running slots. Remaining ties go to the lowest
    index, so the choice is deterministic.
    """
    if not free:
        return None
    limit = max(len(prompt) - 1, 0)
    running = set(busy)

    def reuse_of(slot: FreeSlot) -> int:
        return min(common_prefix(slot.cached, prompt), limit)

    def apart(slot: FreeSlot) -> bool:
        return bool(running) and not {slot.index - 1, slot.index + 1} & running

    best = min(free, key=lambda s: (-reuse_of(s), apart(s), s.last_used, s.index))
    return SlotChoice(index=best.index, reuse=reuse_of(best))


def passes(indices: Collection[int]) -> int:
    """How many runs of consecutive ids ``indices`` form (llama.cpp's passes per step)."""
    ids = set(indices)
    return sum(1 for i in ids if i - 1 not in ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class Joining:
    """A sequence still reading its prompt: ``remaining`` tokens left, ``order`` = when
    it joined (smaller = earlier)."""

    seq: int
    remaining: int
    order: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPlan:
    """One decode step: one token for each of ``decode``, and ``prefill_tokens`` prompt
    tokens of ``prefill`` (None = no prefill this step)."""

    decode: tuple[int, ...]
    prefill: int | None
    prefill_tokens: int

    @property
    def n_tokens(self) -> int:
        return len(self.decode) + self.prefill_tokens

    @property
    def n_sequences(self) -> int:
        return len(self.decode) + (self.prefill is not None)


def plan_step(decoding: Sequence[int], joining: Sequence[Joining], *, chunk: int,
              n_batch: int) -> StepPlan:
    """The next step (Rule 2, Rule 3).

    Raises:
        ValueError: ``chunk`` or ``n_batch`` < 1, or more decoding sequences than
            ``n_batch`` (the runtime sizes the batch to hold one token per slot).
    """
    if chunk < 1 or n_batch < 1:
        raise ValueError("chunk and n_batch must be >= 1")
    if len(decoding) > n_batch:
        raise ValueError(f"{len(decoding)} decoding sequences do not fit a {n_batch}-token batch")
    decode = tuple(decoding)
    room = n_batch - len(decode)
    waiting = [j for j in joining if j.remaining > 0]
    if not waiting or room == 0:
        return StepPlan(decode=decode, prefill=None, prefill_tokens=0)
    first = min(waiting, key=lambda j: (j.order, j.seq))
    budget = min(room, chunk if decode else n_batch)
    return StepPlan(decode=decode, prefill=first.seq,
                    prefill_tokens=min(budget, first.remaining))
