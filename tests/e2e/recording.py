"""A real LlamaBackend that keeps what it opened, so e2e tests can read the batch seam."""

from __future__ import annotations

from pathlib import Path

from peerllm.inference.backend import ModelInstance, OpenOptions, StopCheck
from peerllm.inference.llama import LlamaBackend


class RecordingBackend:
    """The real LlamaBackend, keeping what it opened so the test can read the seam."""

    def __init__(self) -> None:
        self._real = LlamaBackend()
        self.max_parallel = self._real.max_parallel
        self.opened: list[ModelInstance] = []

    def open(self, path: Path, options: OpenOptions, *, should_stop: StopCheck
             ) -> ModelInstance:
        instance = self._real.open(path, options, should_stop=should_stop)
        self.opened.append(instance)
        return instance
