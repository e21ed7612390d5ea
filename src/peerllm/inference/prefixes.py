"""The record book of which conversations this node's batch slots still hold.

When a batched chat generation ends with "stop" or "length", its slot keeps the
conversation's tokens (prompt plus answer) until the runtime gives the slot to another
sequence or clears it, which bumps the slot's epoch (BatchedRuntime.slot_epochs). The
book records digest(model, messages + [assistant answer]) -> (slot, epoch) per model, and
a record is live while the slot's epoch is unchanged: node-info advertises the live
digests (ModelInfo.prefixes) so the router can send the conversation's next turn here,
where the slot reuses the prefix instead of prefilling it (protocols/node-info.md,
"Conversation prefixes").

Records are written from generation worker threads and read from trio, under a lock.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from ..wire.prefixes import MAX_PREFIXES, conversation_digest
from .backend import (
    Benchmark,
    Embedded,
    Emit,
    EncodedPrompt,
    GenerationOutcome,
    ModelInstance,
    StopCheck,
)
from .request import ChatMessage, GenerationRequest, SamplingParams

KEPT_REASONS: Final = frozenset({"stop", "length"})
"""Finish reasons after which the slot holds the whole answer the caller received."""


def next_turn_prefix(req: GenerationRequest) -> bytes | None:
    """The digest of the conversation before ``req``'s new user message: what a node that
    served the previous turn advertises. None for a prompt, a single message, or a chat
    whose last message is not the user's (nothing to continue)."""
    messages = req.messages
    if messages is None or len(messages) < 2 or messages[-1].role != "user":
        return None
    return conversation_digest(req.model, [(m.role, m.content) for m in messages[:-1]])


def answered_digest(req: GenerationRequest, answer: str) -> bytes | None:
    """The digest of ``req``'s conversation followed by the assistant's whole answer
    (text resumed from another replica first, then ``answer``); None for a prompt."""
    if req.messages is None:
        return None
    turns = [(m.role, m.content) for m in req.messages]
    return conversation_digest(req.model, [*turns, ("assistant", req.resume_text + answer)])


@runtime_checkable
class SlotClock(Protocol):
    """A batched instance's slot epochs (BatchedLlamaInstance)."""

    def slot_epochs(self) -> tuple[int, ...]: ...


@dataclass(frozen=True, slots=True)
class _Record:
    digest: bytes
    epoch: int
    order: int  # larger = newer


class PrefixBook:
    """The conversations one batched instance's slots hold (at most one per slot: a slot
    given to a new sequence bumps its epoch, which kills the older record)."""

    def __init__(self, clock: SlotClock) -> None:
        # Weak: a book must not keep an unloaded model's context alive.
        self._clock = weakref.ref(clock)
        self._lock = threading.Lock()
        self._slots: dict[int, _Record] = {}
        self._order = itertools.count()

    def serves(self, clock: SlotClock) -> bool:
        return self._clock() is clock

    def record(self, digest: bytes, *, slot: int, epoch: int) -> None:
        with self._lock:
            self._slots[slot] = _Record(digest, epoch, next(self._order))

    def live(self) -> tuple[bytes, ...]:
        """The digests whose slot still holds them, newest first, at most MAX_PREFIXES."""
        clock = self._clock()
        if clock is None:
            return ()
        epochs = clock.slot_epochs()
        with self._lock:
            for slot in [s for s, r in self._slots.items()
                         if s >= len(epochs) or epochs[s] != r.epoch]:
                del self._slots[slot]
            newest = sorted(self._slots.values(), key=lambda r: -r.order)
        out: list[bytes] = []
        for r in newest:  # two slots may hold one conversation (a repeated request)
            if r.digest not in out:
                out.append(r.digest)
        return tuple(out[:MAX_PREFIXES])


class PrefixBooks:
    """One PrefixBook per model id, for the instance currently serving it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._books: dict[str, PrefixBook] = {}

    def watching(self, instance: ModelInstance, *, model_id: str, req: GenerationRequest
                 ) -> ModelInstance:
        """``instance`` itself, or (batched, chat) a wrapper that records the
        conversation in ``model_id``'s book when its generation ends with its KV kept."""
        if req.messages is None or not isinstance(instance, SlotClock):
            return instance
        return _Recording(instance, book=self._book(model_id, instance), req=req)

    def live(self, model_id: str) -> tuple[bytes, ...]:
        """``model_id``'s live conversation digests, newest first (node-info)."""
        with self._lock:
            book = self._books.get(model_id)
        return () if book is None else book.live()

    def _book(self, model_id: str, clock: SlotClock) -> PrefixBook:
        with self._lock:
            book = self._books.get(model_id)
            if book is None or not book.serves(clock):  # (re)loaded: a new runtime
                book = self._books[model_id] = PrefixBook(clock)
            return book


class _Recording:
    """A ModelInstance that passes everything through and records finished chat turns."""

    def __init__(self, inner: ModelInstance, *, book: PrefixBook, req: GenerationRequest
                 ) -> None:
        self._inner = inner
        self._book = book
        self._req = req

    @property
    def context_size(self) -> int:
        return self._inner.context_size

    def encode(self, *, messages: Sequence[ChatMessage] | None, prompt: str | None,
               resume_text: str) -> EncodedPrompt:
        return self._inner.encode(messages=messages, prompt=prompt, resume_text=resume_text)

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        parts: list[str] = []

        def keep(text: str, n_tokens: int) -> None:
            parts.append(text)
            emit(text, n_tokens)

        outcome = self._inner.generate(prompt, params, emit=keep, should_stop=should_stop)
        if outcome.finish_reason in KEPT_REASONS and outcome.slot is not None \
                and outcome.slot_epoch is not None:
            digest = answered_digest(self._req, "".join(parts))
            if digest is not None:
                self._book.record(digest, slot=outcome.slot, epoch=outcome.slot_epoch)
        return outcome

    def embed(self, inputs: Sequence[str]) -> Embedded:
        return self._inner.embed(inputs)

    def benchmark(self, n_tokens: int) -> Benchmark:
        return self._inner.benchmark(n_tokens)

    def close(self) -> None:
        self._inner.close()
