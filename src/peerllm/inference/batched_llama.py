"""A llama model served with continuous batching, behind the ModelInstance port.

``generate`` may be called from several threads at once: each call queues one sequence on
the model's BatchedRuntime, then blocks, emitting its own text (and polling its own stop
check) in the calling thread until the sequence ends. ``encode`` and the chat format are
the single-stream instance's.
"""

from __future__ import annotations

import functools
import itertools
import queue
import time
from collections.abc import Sequence as Seq
from typing import Any, Final

from ..errors import InvalidInferenceRequest
from .backend import (
    Benchmark,
    Embedded,
    Emit,
    EncodedPrompt,
    GenerationOutcome,
    ModelInstance,
    OpenOptions,
    StopCheck,
)
from .batched import BatchedRuntime, RuntimeStatistics, open_runtime
from .request import ChatMessage, SamplingParams
from .sampler import checked_gbnf, open_sampler
from .sequence import Finished, Sequence

STOP_POLL_S: Final = 0.05
"""How often a waiting caller polls its stop check when no text arrives (queued, or a
slow step): a cancel is noticed within this, plus one step."""
PIECE_CACHE: Final = 1 << 16  # tokens whose text the step thread keeps at hand
_BENCHMARK_PROMPT: Final = "The quick brown fox jumps over the lazy dog. Once upon a time"


class BatchedLlamaInstance:
    """One llama context with ``parallel`` slots; see ``ModelInstance`` and the module
    docstring. ``statistics()`` is the runtime's snapshot (slots, running, queued, and the
    decode calls)."""

    def __init__(self, inner: ModelInstance, llm: Any, runtime: BatchedRuntime,
                 model_id: str) -> None:
        import llama_cpp

        self._inner = inner
        self._llm = llm
        self._runtime = runtime
        self._model_id = model_id
        self._vocab = llm._model.vocab
        self._n_vocab = int(llm.n_vocab())
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._order = itertools.count()
        # A token's bytes and end-ness never change: look each up once (the step thread
        # asks for every token it samples; llama_cpp's detokenize is several Python
        # calls deep). Bounded by the vocabulary.
        self._piece = functools.lru_cache(maxsize=PIECE_CACHE)(self._detokenize)
        self._is_end = functools.lru_cache(maxsize=PIECE_CACHE)(self._end_of_generation)

    @classmethod
    def wrap(cls, inner: ModelInstance, llm: Any, options: OpenOptions) -> BatchedLlamaInstance:
        """Start a runtime on ``llm``'s context (opened with ``options.parallel`` sequences)."""
        runtime = open_runtime(model_id=options.model_id, ctx=llm._ctx.ctx,
                               parallel=options.parallel, n_batch=int(llm.n_batch))
        return cls(inner, llm, runtime, options.model_id)

    def _detokenize(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token]))

    def _end_of_generation(self, token: int) -> bool:
        return bool(self._is_eog(self._vocab, token))

    @property
    def context_size(self) -> int:
        return self._inner.context_size

    @property
    def slots(self) -> int:
        return self._runtime.slots

    @property
    def running(self) -> int:
        return self._runtime.statistics().running

    @property
    def queued(self) -> int:
        return self._runtime.statistics().queued

    def statistics(self) -> RuntimeStatistics:
        return self._runtime.statistics()

    def slot_epochs(self) -> tuple[int, ...]:
        """The runtime's ``slot_epochs()`` (see BatchedRuntime)."""
        return self._runtime.slot_epochs()

    def encode(self, *, messages: Seq[ChatMessage] | None, prompt: str | None,
               resume_text: str) -> EncodedPrompt:
        return self._inner.encode(messages=messages, prompt=prompt, resume_text=resume_text)

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        """See ``ModelInstance.generate``; blocks until this request's sequence ends.

        Raises:
            InvalidInferenceRequest: a bad json_schema or logit_bias token.
            InferenceCancelled: the model was closed, or llama_decode failed.
        """
        if should_stop():
            return GenerationOutcome(finish_reason="cancelled", completion_tokens=0,
                                     decode_seconds=0.0)
        gbnf = checked_gbnf(self._model_id, prompt, params)
        sampler = open_sampler(model_id=self._model_id, vocab=self._vocab,
                               n_vocab=self._n_vocab, params=params, gbnf=gbnf)
        seq = Sequence(prompt=prompt, params=params, sampler=sampler,
                       budget=min(params.max_tokens, self.context_size - len(prompt.tokens)),
                       order=next(self._order), detokenize=self._piece, is_end=self._is_end)
        self._runtime.submit(seq)
        try:
            return self._follow(seq, emit=emit, should_stop=should_stop)
        except BaseException:
            self._runtime.cancel(seq)
            raise

    def _follow(self, seq: Sequence, *, emit: Emit, should_stop: StopCheck) -> GenerationOutcome:
        asked = False
        while True:
            try:
                item = seq.out.get(timeout=STOP_POLL_S)
            except queue.Empty:
                item = None
            if isinstance(item, Finished):
                if item.error is not None:
                    raise item.error
                assert item.outcome is not None
                return item.outcome
            if item is not None:
                emit(item.text, item.n_tokens)
            if not asked and should_stop():
                asked = True
                self._runtime.cancel(seq)

    def benchmark(self, n_tokens: int) -> Benchmark:
        """Greedy generation of up to ``n_tokens`` from a fixed prompt, through the batch."""
        prompt = self.encode(messages=None, prompt=_BENCHMARK_PROMPT, resume_text="")
        greedy = SamplingParams(max_tokens=n_tokens, temperature=0.0, repeat_penalty=1.0)
        warm = self.encode(messages=None, prompt="Hello", resume_text="")
        self.generate(warm, SamplingParams(max_tokens=1, temperature=0.0),
                      emit=lambda _t, _n: None, should_stop=lambda: False)
        start = time.perf_counter()
        first: list[float] = []

        def note(_text: str, _n: int) -> None:
            if not first:
                first.append(time.perf_counter())

        outcome = self.generate(prompt, greedy, emit=note, should_stop=lambda: False)
        end = time.perf_counter()
        count = outcome.completion_tokens
        t_first = first[0] if first else end
        tps = (count - 1) / outcome.decode_seconds if count > 1 and outcome.decode_seconds \
            else None
        return Benchmark(tokens=count, seconds=end - start, tokens_per_second=tps,
                         ttft_s=t_first - start)

    def embed(self, inputs: Seq[str]) -> Embedded:
        raise InvalidInferenceRequest(self._model_id, "not an embedding context")

    def close(self) -> None:
        self._runtime.close()
        self._inner.close()
