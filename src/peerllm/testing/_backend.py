"""A fake model runtime (``inference.backend.ModelBackend``) that emits scripted tokens.

It runs in the registry's real worker threads, as llama.cpp does, but needs no model
file contents and generates in about a millisecond per token, so registry and engine
tests check the trio side (limiters, shared loads, stop events) without llama.cpp.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ..errors import ModelLoadError
from ..inference.backend import (
    Benchmark,
    Embedded,
    Emit,
    EncodedPrompt,
    GenerationOutcome,
    OpenOptions,
    StopCheck,
)
from ..inference.request import ChatMessage, SamplingParams

FAKE_DIMS: Final = 8


def fake_vector(text: str) -> list[float]:
    """The fake model's embedding of ``text``: FAKE_DIMS float32-exact values from its
    SHA-256, L2-normalised (so any node's FakeBackend gives the same vector)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    raw = [b - 127.5 for b in digest[:FAKE_DIMS]]
    norm = math.sqrt(sum(x * x for x in raw))
    return list(struct.unpack(f"<{FAKE_DIMS}f", struct.pack(f"<{FAKE_DIMS}f",
                                                            *(x / norm for x in raw))))


class FakeInstance:
    """One "open model": words are tokens; generation plays the backend's script."""

    def __init__(self, backend: FakeBackend, path: Path, options: OpenOptions) -> None:
        self.backend = backend
        self.path = path
        self.options = options
        self.closed = False
        self.generated = 0  # tokens emitted over the instance's life
        self.embed_calls = 0  # embed() calls (a batch of requests is one)

    @property
    def context_size(self) -> int:
        return self.options.context_size

    def encode(self, *, messages: Sequence[ChatMessage] | None, prompt: str | None,
               resume_text: str) -> EncodedPrompt:
        text = prompt if prompt is not None else " ".join(m.content for m in messages or ())
        with self.backend.lock:
            self.backend.prompts.append(text)  # encoded right before it generates
        n = len(text.split()) + 1
        return EncodedPrompt(tokens=tuple(range(n + len(resume_text.split()))), prompt_tokens=n)

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        backend = self.backend
        for i in range(params.max_tokens):
            text = backend.token(i)
            if text is None:  # the script is over before max_tokens: a natural stop
                return GenerationOutcome(finish_reason="stop", completion_tokens=i,
                                         decode_seconds=backend.token_s * i)
            while not backend.gate.wait(0.005):  # held by the test; still stoppable
                if should_stop():
                    return GenerationOutcome(finish_reason="cancelled", completion_tokens=i,
                                             decode_seconds=0.0)
            time.sleep(backend.token_s)
            self.generated += 1
            emit(text, 1)
            if i + 1 < params.max_tokens and should_stop():
                return GenerationOutcome(finish_reason="cancelled", completion_tokens=i + 1,
                                         decode_seconds=0.0)
        return GenerationOutcome(finish_reason="length", completion_tokens=params.max_tokens,
                                 decode_seconds=0.01 * params.max_tokens)

    def embed(self, inputs: Sequence[str]) -> Embedded:
        """``fake_vector`` of each input; a token per word plus one per input."""
        if not self.options.embedding:
            raise RuntimeError("embed() on a context not opened with embedding=True")
        self.embed_calls += 1
        counts = tuple(len(s.split()) + 1 for s in inputs)
        return Embedded(vectors=[fake_vector(s) for s in inputs], prompt_tokens=sum(counts),
                        input_tokens=counts)

    def benchmark(self, n_tokens: int) -> Benchmark:
        return Benchmark(tokens=n_tokens, seconds=0.1, tokens_per_second=42.0, ttft_s=0.01)

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """Opens ``FakeInstance``s. Every instance emits ``tokens`` (default "t0 ", "t1 ", …).

    Args:
        tokens: the text of each token in order; when they run out before
            ``max_tokens`` the generation stops with finish_reason "stop". None: an
            endless "t{i} " sequence (finish_reason "length").
        open_s: seconds each load takes (in the worker thread).
        token_s: seconds each token takes.
        max_parallel: what it reports it can batch (``ModelBackend.max_parallel``); 1 by
            default, so ``parallel: auto`` gives one request per instance. Its instances
            serve several requests at once whatever ``OpenOptions.parallel`` says.

    ``gate`` (set by default) holds generation while cleared; ``hang_paths`` are files
    whose load blocks until stopped (then raises ModelLoadError), ``refuse_paths`` files
    it refuses to load as llama.cpp refuses a corrupt model; ``opened`` lists every
    instance in load order; ``prompts`` the prompt text (the chat messages' contents
    joined by spaces) of every generation, in the order they started.
    """

    def __init__(self, *, tokens: Sequence[str] | None = None, open_s: float = 0.0,
                 token_s: float = 0.001, max_parallel: int = 1) -> None:
        self.max_parallel = max_parallel
        self.tokens = None if tokens is None else tuple(tokens)
        self.open_s = open_s
        self.token_s = token_s
        self.hang_paths: set[Path] = set()
        self.refuse_paths: set[Path] = set()
        self.opened: list[FakeInstance] = []
        self.prompts: list[str] = []
        self.lock = threading.Lock()  # prompts is appended to from worker threads
        self.gate = threading.Event()
        self.gate.set()

    def token(self, i: int) -> str | None:
        """The text of token ``i``, or None past the end of the script."""
        if self.tokens is None:
            return f"t{i} "
        return self.tokens[i] if i < len(self.tokens) else None

    def open(self, path: Path, options: OpenOptions, *, should_stop: StopCheck) -> FakeInstance:
        time.sleep(self.open_s)
        if path in self.hang_paths:
            while not should_stop():
                time.sleep(0.001)
            raise ModelLoadError(options.model_id, "load was stopped")
        if path in self.refuse_paths:
            raise ModelLoadError(options.model_id, f"llama.cpp could not load {path}: "
                                 "failed to load model")
        instance = FakeInstance(self, path, options)
        self.opened.append(instance)
        return instance
