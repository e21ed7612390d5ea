"""One generation inside the batched runtime: its prompt, KV progress, sampler and text.

A ``Sequence`` is created by the thread that calls ``generate`` and then belongs to the
runtime's step thread, except ``cancel_requested`` (written under the runtime's lock) and
``out`` (a thread-safe queue the calling thread reads). The text pipeline is the
single-stream one (inference/llama.py): bytes are decoded incrementally as UTF-8, so a
character split across tokens is emitted whole, and stop strings are held back by
StopScanner until they can no longer match.
"""

from __future__ import annotations

import codecs
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InferenceError
from ..events import FinishReason, TokenChunk
from .backend import EncodedPrompt, GenerationOutcome
from .request import SamplingParams
from .sampler import Sampler
from .stops import StopScanner


@dataclass(frozen=True, slots=True)
class Finished:
    """The last item a sequence puts on ``out``: its outcome, or the error that ended it."""

    outcome: GenerationOutcome | None
    error: InferenceError | None = None
    reused: int = 0  # prompt tokens found in the slot's cache (not prefilled)


Item = TokenChunk | Finished  # final text (never empty), then the outcome


class Sequence:
    """See the module docstring."""

    def __init__(self, *, prompt: EncodedPrompt, params: SamplingParams, sampler: Sampler,
                 budget: int, order: int, detokenize: Callable[[int], bytes],
                 is_end: Callable[[int], bool]) -> None:
        self.prompt = prompt.tokens
        self.params = params
        self.sampler = sampler
        self.budget = budget
        self.order = order  # when it joined; prefill goes in this order
        self.out: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.cancel_requested = False  # guarded by the runtime's lock
        # Step-thread state from here on.
        self.slot: int | None = None
        self.slot_epoch: int | None = None  # the slot's epoch while this sequence holds it
        self.reused = 0
        self.history: list[int] = []  # tokens whose KV this sequence's slot holds
        self.pending: int | None = None  # sampled but not yet decoded
        self.produced = 0
        self._detokenize = detokenize
        self._is_end = is_end
        self._scanner = StopScanner((*params.stop, *prompt.stops))
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._unsent = 0
        self._first = self._last = 0.0
        self.finished = False

    @property
    def prefilled(self) -> int:
        """Prompt tokens whose KV is in the cache (reused or decoded)."""
        return min(len(self.history), len(self.prompt))

    @property
    def remaining_prompt(self) -> int:
        return len(self.prompt) - self.prefilled

    def accept(self, token: int) -> FinishReason | None:
        """Take a sampled token; returns why the sequence ends, or None to go on."""
        self._last = time.perf_counter()
        if self._is_end(token):
            return "stop"
        self.produced += 1
        self._unsent += 1
        if self.produced == 1:
            self._first = self._last
        text = self._scanner.feed(self._decoder.decode(self._detokenize(token)))
        if text:
            self.out.put(TokenChunk(text=text, n_tokens=self._unsent))
            self._unsent = 0
        if self._scanner.stopped:
            return "stop"
        if self.produced >= self.budget:
            return "length"
        self.pending = token
        return None

    def finish(self, reason: FinishReason) -> None:
        """Flush held text and post the outcome; the sampler is freed."""
        if self.finished:
            return
        self.finished = True
        self.pending = None
        if not self._scanner.stopped:
            tail = self._scanner.feed(self._decoder.decode(b"", final=True))
            tail += self._scanner.flush()
            if tail:
                self.out.put(TokenChunk(text=tail, n_tokens=self._unsent))
        self.sampler.close()
        seconds = self._last - self._first if self.produced > 1 else 0.0
        self.out.put(Finished(GenerationOutcome(finish_reason=reason,
                                                completion_tokens=self.produced,
                                                decode_seconds=seconds, slot=self.slot,
                                                slot_epoch=self.slot_epoch),
                              reused=self.reused))

    def fail(self, error: InferenceError) -> None:
        if self.finished:
            return
        self.finished = True
        self.pending = None
        self.sampler.close()
        self.out.put(Finished(None, error))
