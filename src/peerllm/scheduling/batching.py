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
- Rule 4 (contiguity): llama.cpp computes a step in one pass per run of consecutive slot
  ids (one KV stream per slot), so a slot next to a running one costs nothing and any
  other costs a pass per step for the request's whole life. A request goes next to the
  running slots; a long cached prefix held elsewhere is copied there (``source``).
  Among equals, the least recently used slot wins, so warm prefixes live longest.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

MIN_REUSE = 16
"""Shorter shared prefixes are prefilled again: they save next to nothing, and KV computed
in another batch shape can differ in the last float bits (llama.cpp picks kernels by batch
size), which is enough to flip a greedy pick after a shared BOS token."""
COPY_MIN = 16
"""Prompt tokens a cache copy must save: copying a slot's KV is a memcpy of the slot's
whole stream, about what prefilling a few tokens costs on a CPU."""


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
    """Where a request goes (``index``), how many of its leading prompt tokens need no
    prefill (``reuse``), and the free slot whose cache to copy into ``index`` first
    (``source``; None = use ``index``'s own cache)."""

    index: int
    reuse: int
    source: int | None = None


def choose_slot(prompt: Sequence[int], free: Sequence[FreeSlot], *,
                busy: Collection[int] = (), min_reuse: int = MIN_REUSE,
                copy_min: int = COPY_MIN) -> SlotChoice | None:
    """The slot for ``prompt`` (Rules 1 and 4), or None when no slot is free.

    ``busy`` are the running slots. A shared prefix shorter than ``min_reuse`` is not
    reused. A cached prefix in a slot that would add a compute pass is copied into a
    slot that does not, when it saves at least ``copy_min`` more tokens than that slot's
    own cache (a copy moves the whole slot's KV). Remaining ties go to the lowest index,
    so the choice is deterministic.
    """
    if not free:
        return None
    limit = max(len(prompt) - 1, 0)
    running = set(busy)

    def reuse_of(slot: FreeSlot) -> int:
        n = min(common_prefix(slot.cached, prompt), limit)
        return n if n >= min_reuse else 0

    def apart(slot: FreeSlot) -> bool:
        return bool(running) and not {slot.index - 1, slot.index + 1} & running

    best = min(free, key=lambda s: (-reuse_of(s), apart(s), s.last_used, s.index))
    if not apart(best):
        return SlotChoice(index=best.index, reuse=reuse_of(best))
    near = [s for s in free if not apart(s)]
    if not near:  # every free slot starts a new run: take the best cache where it is
        return SlotChoice(index=best.index, reuse=reuse_of(best))
    place = min(near, key=lambda s: (-reuse_of(s), s.last_used, s.index))
    if reuse_of(best) - reuse_of(place) >= copy_min:
        return SlotChoice(index=place.index, reuse=reuse_of(best), source=best.index)
    return SlotChoice(index=place.index, reuse=reuse_of(place))


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
