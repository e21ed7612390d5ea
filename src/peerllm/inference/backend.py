"""The small synchronous interface the registry and engine need from a model runtime.

``inference/llama.py`` implements it with llama-cpp-python; tests can supply a fake.
Every method here blocks and runs in a worker thread; an instance is used by one
thread at a time, except a batched one (``OpenOptions.parallel`` > 1, batched_llama.py),
whose ``generate`` serves several threads at once, one sequence each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..events import FinishReason
from .request import ChatMessage, SamplingParams

StopCheck = Callable[[], bool]  # polled between tokens; True = stop now
Emit = Callable[[str, int], None]  # (text, tokens behind it); may raise to abort


@dataclass(frozen=True, kw_only=True)
class OpenOptions:
    """How to open one llama context on a model file."""

    model_id: str
    context_size: int
    gpu_layers: int = 0
    n_threads: int | None = None
    use_extra_bufts: bool = False
    chat_format: str | None = None
    embedding: bool = False  # an embedding context (pooled vectors) instead of a generator
    mean_pooling: bool = False  # embedding context of a generative model: average tokens
    parallel: int = 1  # sequences decoded together (inference/batched.py); 1 = one stream


@dataclass(frozen=True, kw_only=True)
class EncodedPrompt:
    """A request turned into tokens: ``tokens`` is what is fed (prompt, then resume text)."""

    tokens: tuple[int, ...]
    prompt_tokens: int  # how many of ``tokens`` are the prompt (the rest is resume text)
    stops: tuple[str, ...] = ()  # stop strings required by the chat format


@dataclass(frozen=True, kw_only=True)
class GenerationOutcome:
    """How a generation ended, as seen by the thread that ran it."""

    finish_reason: FinishReason
    completion_tokens: int
    decode_seconds: float  # first token to last (0.0 for fewer than two tokens)
    # Batched only (None otherwise): the slot the sequence ran in and that slot's epoch
    # then; its KV stays there while BatchedRuntime.slot_epochs()[slot] == slot_epoch.
    slot: int | None = None
    slot_epoch: int | None = None


@dataclass(frozen=True, kw_only=True)
class Embedded:
    """The vectors of a batch of inputs, and what reading them cost."""

    vectors: list[list[float]]  # one L2-normalised vector per input, in input order
    prompt_tokens: int  # tokens read for all inputs together (the usage to report)
    # Tokens read per input, in input order; empty when the backend does not count them
    # (a batch shared by several requests then splits prompt_tokens by inputs).
    input_tokens: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """A greedy self-benchmark right after loading."""

    tokens: int
    seconds: float
    tokens_per_second: float | None  # None when fewer than two tokens came out
    ttft_s: float  # prompt evaluation plus the first token


class ModelInstance(Protocol):
    """One open llama context (weights plus KV cache)."""

    @property
    def context_size(self) -> int: ...

    def encode(self, *, messages: Sequence[ChatMessage] | None, prompt: str | None,
               resume_text: str) -> EncodedPrompt:
        """Apply the chat format (for messages) and tokenize.

        Raises:
            InvalidInferenceRequest: the prompt does not fit the context window.
        """
        ...

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        """Generate, calling ``emit`` with non-empty text as it becomes final."""
        ...

    def embed(self, inputs: Sequence[str]) -> Embedded:
        """One normalised vector per input, and the tokens read (only on contexts opened
        with embedding=True)."""
        ...

    def benchmark(self, n_tokens: int) -> Benchmark: ...

    def close(self) -> None:
        """Free the context and weights; the instance is unusable afterwards."""
        ...


class ModelBackend(Protocol):
    """Opens model files. ``should_stop`` is polled during the load to abort it.

    ``max_parallel``: the most sequences one context of this backend decodes together
    (``OpenOptions.parallel``); 1 = it cannot batch, and ``parallel: auto`` gives its
    models one request per context.
    """

    @property
    def max_parallel(self) -> int: ...

    def open(self, path: Path, options: OpenOptions, *,
             should_stop: StopCheck) -> ModelInstance:
        """Load ``path``.

        Raises:
            ModelLoadError: the runtime refused the file, or the load was stopped.
        """
        ...
