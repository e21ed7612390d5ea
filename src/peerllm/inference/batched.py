"""Continuous batching for one model: one llama context with ``parallel`` sequences (slots)
and one step thread that runs a single ``llama_decode`` per step over all of them.

Each step, under the lock: cancelled sequences end and free their slot's KV; waiting
requests take free slots (``scheduling.batching.choose_slot``: the slot whose cache holds
the longest prefix of the prompt, truncated past it with ``llama_memory_seq_rm``). Then,
without the lock, one batch is built (``plan_step``: one token per decoding sequence plus
at most one prefill chunk), decoded once, and every sequence with a logits row samples
with its own sampler chain. Text goes to each request's queue; the requesting thread
emits it (emit callbacks and stop checks run in the caller's thread, as trio needs).

Invariants:
- Only the step thread calls llama.cpp on the context, samplers and batch.
- A finished sequence leaves its KV in its slot (``FreeSlot.cached``) until another
  request takes that slot; a cancelled or failed one is cleared at once.

llama.cpp failures become InferenceCancelled (chained where there is an exception).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InferenceCancelled
from ..scheduling.batching import FreeSlot, Joining, StepPlan, choose_slot, plan_step
from .sequence import Sequence

logger = logging.getLogger(__name__)

DEFAULT_PREFILL_CHUNK: Final = 64
"""Prompt tokens one joining sequence may add to a step while others decode."""


@dataclass(frozen=True, kw_only=True)
class RuntimeStatistics:
    """A snapshot: capacity, load and what the decoder did (the test seam)."""

    slots: int
    running: int  # sequences holding a slot
    queued: int  # sequences waiting for one
    decode_calls: int
    steps_by_width: dict[int, int]  # sequences in a step -> how many steps had that many
    prefilled_tokens: int  # prompt tokens decoded
    reused_tokens: int  # prompt tokens found in a slot's cache instead
    cache_copies: int  # reused prefixes copied from another slot (scheduling.batching)


@dataclass(slots=True)
class _Slot:
    index: int
    seq: Sequence | None = None
    cached: tuple[int, ...] = ()
    last_used: int = 0
    epoch: int = 0  # bumped when the slot is given to a new sequence or cleared


class BatchedRuntime:
    """See the module docstring. Build it with ``open_runtime``; ``close`` ends it."""

    def __init__(self, *, model_id: str, ctx: Any, parallel: int, n_batch: int,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        import llama_cpp

        if parallel < 1 or n_batch < parallel:
            raise ValueError("need parallel >= 1 and n_batch >= parallel")
        self._lib = llama_cpp
        self.model_id = model_id
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_batch = n_batch
        self._chunk = prefill_chunk
        self._slots = [_Slot(i) for i in range(parallel)]
        self._waiting: list[Sequence] = []
        self._cond = threading.Condition()
        self._closing = False
        self._steps = 0
        self._widths: Counter[int] = Counter()
        self._prefilled = self._reused = self._copies = 0
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._thread = threading.Thread(target=self._run, name=f"batch-{model_id}",
                                        daemon=True)

    # -- called from any thread --------------------------------------------------------

    @property
    def slots(self) -> int:
        return len(self._slots)

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; it joins the batch at the next step with a free slot.

        Raises:
            InferenceCancelled: the runtime is closing.
        """
        with self._cond:
            if self._closing:
                seq.sampler.close()
                raise InferenceCancelled(self.model_id, "the model is being unloaded")
            self._waiting.append(seq)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """Ask that ``seq`` end ("cancelled") at the next step, freeing its slot."""
        with self._cond:
            seq.cancel_requested = True
            self._cond.notify()

    def slot_epochs(self) -> tuple[int, ...]:
        """A counter per slot, bumped whenever the slot is given to a new sequence or
        cleared: a finished sequence's KV is still in its slot while the slot's epoch
        equals its ``GenerationOutcome.slot_epoch``."""
        with self._cond:
            return tuple(s.epoch for s in self._slots)

    def statistics(self) -> RuntimeStatistics:
        with self._cond:
            running = sum(s.seq is not None for s in self._slots)
            return RuntimeStatistics(slots=len(self._slots), running=running,
                                     queued=len(self._waiting), decode_calls=self._steps,
                                     steps_by_width=dict(self._widths),
                                     prefilled_tokens=self._prefilled,
                                     reused_tokens=self._reused,
                                     cache_copies=self._copies)

    def close(self) -> None:
        """Fail what is queued or running (InferenceCancelled), stop the step thread and
        free the batch. The context itself belongs to the caller."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None

    # -- the step thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._closing or self._waiting
                               or any(s.seq is not None for s in self._slots)):
                        self._cond.wait()
                    if self._closing:
                        return
                    self._end_cancelled()
                    self._admit()
                    plan = self._plan()
                if plan.n_tokens:
                    self._step(plan)
        finally:
            self._fail_all("the model is being unloaded")

    def _end_cancelled(self) -> None:
        kept: list[Sequence] = []
        for seq in self._waiting:
            if seq.cancel_requested:
                seq.finish("cancelled")
            else:
                kept.append(seq)
        self._waiting = kept
        for slot in self._slots:
            if slot.seq is not None and slot.seq.cancel_requested:
                slot.seq.finish("cancelled")
                self._clear(slot)

    def _admit(self) -> None:
        while self._waiting:
            free = [FreeSlot(index=s.index, cached=s.cached, last_used=s.last_used)
                    for s in self._slots if s.seq is None]
            seq = self._waiting[0]
            busy = [s.index for s in self._slots if s.seq is not None]
            choice = choose_slot(seq.prompt, free, busy=busy)
            if choice is None:
                return
            self._waiting.pop(0)
            slot = self._slots[choice.index]
            reuse = choice.reuse
            lib = self._lib
            if choice.source is not None:
                # Whole-stream copy (llama.cpp copies across KV streams only in full; the
                # data moves at the next decode), then truncated like an own cache.
                lib.llama_memory_seq_cp(self._mem, choice.source, slot.index, -1, -1)
                self._copies += 1
            if not lib.llama_memory_seq_rm(self._mem, slot.index, reuse, -1):
                lib.llama_memory_seq_rm(self._mem, slot.index, -1, -1)
                reuse = 0
            slot.epoch += 1
            seq.slot, seq.slot_epoch, seq.reused = slot.index, slot.epoch, reuse
            seq.history = list(seq.prompt[:reuse])
            slot.seq, slot.cached = seq, ()
            self._reused += reuse

    def _plan(self) -> StepPlan:
        decoding = [s.index for s in self._slots if s.seq is not None and s.seq.pending is not None]
        joining = [Joining(seq=s.index, remaining=s.seq.remaining_prompt, order=s.seq.order)
                   for s in self._slots if s.seq is not None and s.seq.pending is None]
        return plan_step(decoding, joining, chunk=self._chunk, n_batch=self._n_batch)

    def _step(self, plan: StepPlan) -> None:
        """Fill the batch per ``plan``, decode once, sample every sequence with logits."""
        batch = self._batch
        rows: list[tuple[Sequence, int]] = []
        n = 0

        def put(seq: Sequence, token: int, logits: bool) -> None:
            nonlocal n
            assert seq.slot is not None
            batch.token[n] = token
            batch.pos[n] = len(seq.history)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.slot
            batch.logits[n] = logits
            seq.history.append(token)
            if logits:
                rows.append((seq, n))
            n += 1

        for index in plan.decode:
            seq = self._slots[index].seq
            assert seq is not None and seq.pending is not None
            put(seq, seq.pending, True)
        if plan.prefill is not None:
            seq = self._slots[plan.prefill].seq
            assert seq is not None
            start = seq.prefilled
            chunk = seq.prompt[start:start + plan.prefill_tokens]
            last = start + len(chunk) == len(seq.prompt)
            for i, token in enumerate(chunk):
                put(seq, token, last and i == len(chunk) - 1)
            self._prefilled += len(chunk)
        batch.n_tokens = n
        code = self._lib.llama_decode(self._ctx, batch)
        with self._cond:
            self._steps += 1
            self._widths[plan.n_sequences] += 1
        if code != 0:
            # 1 = no room in the KV cache (budgets rule that out), < 0 = the decode
            # failed; either way the sequences in this batch cannot go on.
            logger.warning("model %s: llama_decode returned %d for %d tokens", self.model_id,
                           code, n)
            with self._cond:
                for slot in self._slots:
                    if slot.seq is not None:
                        slot.seq.fail(InferenceCancelled(
                            self.model_id, f"llama_decode failed (code {code})"))
                        self._clear(slot)
            return
        for seq, row in rows:
            seq.pending = None
            reason = seq.accept(seq.sampler.sample(self._ctx, row))
            if reason is not None:
                with self._cond:
                    seq.finish(reason)
                    self._release(seq)

    def _release(self, seq: Sequence) -> None:
        """A sequence ended normally: its KV stays as its slot's cache."""
        assert seq.slot is not None
        slot = self._slots[seq.slot]
        slot.seq, slot.cached = None, tuple(seq.history)
        self._steps_used(slot)

    def _clear(self, slot: _Slot) -> None:
        self._lib.llama_memory_seq_rm(self._mem, slot.index, -1, -1)
        slot.seq, slot.cached = None, ()
        slot.epoch += 1
        self._steps_used(slot)

    def _steps_used(self, slot: _Slot) -> None:
        slot.last_used = self._steps + 1

    def _fail_all(self, why: str) -> None:
        with self._cond:
            self._closing = True
            for seq in self._waiting:
                seq.fail(InferenceCancelled(self.model_id, why))
            self._waiting.clear()
            for slot in self._slots:
                if slot.seq is not None:
                    slot.seq.fail(InferenceCancelled(self.model_id, why))
                    slot.seq = None
                slot.cached = ()
                slot.epoch += 1


def open_runtime(*, model_id: str, ctx: Any, parallel: int, n_batch: int,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> BatchedRuntime:
    """A runtime over ``ctx`` (opened with ``n_seq_max >= parallel``), its thread started."""
    runtime = BatchedRuntime(model_id=model_id, ctx=ctx, parallel=parallel, n_batch=n_batch,
                             prefill_chunk=prefill_chunk)
    runtime._thread.start()
    return runtime
