"""A FakeBackend whose contexts report batch slots, as a batched llama context does, so
the prefix book (inference/prefixes.py) can be tested on nodes without llama.cpp."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from peerllm.inference.backend import (
    Emit,
    EncodedPrompt,
    GenerationOutcome,
    OpenOptions,
    StopCheck,
)
from peerllm.inference.request import SamplingParams
from peerllm.testing import FakeBackend, FakeInstance


class SlottedInstance(FakeInstance):
    """Each generation takes the next of ``slots`` slots in turn (bumping its epoch, as
    BatchedRuntime does when it gives a slot to a new sequence) and reports it."""

    def __init__(self, backend: FakeBackend, path: Path, options: OpenOptions, slots: int
                 ) -> None:
        super().__init__(backend, path, options)
        self._lock = threading.Lock()
        self._epochs = [0] * slots
        self._next = 0

    def slot_epochs(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(self._epochs)

    def evict(self, slot: int) -> None:
        """The slot is cleared (or given to another sequence): its conversation is gone."""
        with self._lock:
            self._epochs[slot] += 1

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        with self._lock:
            slot = self._next
            self._next = (slot + 1) % len(self._epochs)
            self._epochs[slot] += 1
            epoch = self._epochs[slot]
        outcome = super().generate(prompt, params, emit=emit, should_stop=should_stop)
        return dataclasses.replace(outcome, slot=slot, slot_epoch=epoch)


class SlottedBackend(FakeBackend):
    """FakeBackend opening SlottedInstances with ``slots`` slots each."""

    def __init__(self, *, slots: int = 2, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.slots = slots

    def open(self, path: Path, options: OpenOptions, *, should_stop: StopCheck
             ) -> SlottedInstance:
        plain = super().open(path, options, should_stop=should_stop)  # its checks and delay
        self.opened.remove(plain)
        instance = SlottedInstance(self, path, options, self.slots)
        self.opened.append(instance)
        return instance
