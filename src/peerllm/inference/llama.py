"""llama-cpp-python behind the ModelBackend interface; llama_cpp is imported lazily here only.

Everything in this module blocks and runs in worker threads. llama_cpp exceptions stop
here: they become ModelLoadError / InvalidInferenceRequest (chained).
"""

from __future__ import annotations

import codecs
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..config.inference import MAX_PARALLEL
from ..errors import InvalidInferenceRequest, ModelLoadError
from ..events import FinishReason
from .backend import (
    Benchmark,
    Embedded,
    Emit,
    EncodedPrompt,
    GenerationOutcome,
    OpenOptions,
    StopCheck,
)
from .batched_llama import BatchedLlamaInstance
from .request import MIN_P, REPEAT_LAST_N, ChatMessage, SamplingParams
from .sampler import checked_gbnf
from .stops import StopScanner

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger(__name__)

BENCHMARK_PROMPT: Final = b"The quick brown fox jumps over the lazy dog. Once upon a time"
_POOLING_NONE: Final = 0
_POOLING_MEAN: Final = 1
_POOLING_UNSPECIFIED: Final = -1


@functools.cache
def _peer_llama_class() -> type[Llama]:
    """``Llama`` with model params it does not expose as arguments.

    ``Llama.__init__`` builds ``self.model_params`` from ``llama_model_default_params()``
    and loads the model a few lines later, with no hook in between. Making
    ``model_params`` a property lets us patch the struct as it is assigned, per instance,
    without touching module globals (so concurrent loads with different settings are
    safe). ``open_llama`` checks afterwards that the loaded model really got the values.
    """
    from llama_cpp import Llama

    class PeerLlama(Llama):  # type: ignore[misc]  # llama_cpp's Llama is Any to mypy
        _peer_use_extra_bufts: bool
        _peer_progress: Any  # a ctypes callback; referenced here so it outlives the load
        _peer_parallel: int

        def __init__(self, model_path: str, *, use_extra_bufts: bool, progress: Any,
                     parallel: int = 1, **kwargs: Any) -> None:
            self._peer_use_extra_bufts = use_extra_bufts
            self._peer_progress = progress
            self._peer_parallel = parallel
            super().__init__(model_path, **kwargs)

        @property
        def context_params(self) -> Any:
            return self.__dict__["context_params"]

        @context_params.setter
        def context_params(self, params: Any) -> None:
            if self._peer_parallel > 1:
                # One KV stream per sequence: a slot attends to its own cells laid out as
                # in a single-stream context, so greedy output is the same token for
                # token (a unified cache interleaves the cells, which changes float
                # sums enough to flip a greedy pick). The price: llama.cpp computes a
                # step in one pass per run of consecutive sequence ids
                # (scheduling.batching keeps the running slots together).
                params.n_seq_max = self._peer_parallel
                params.kv_unified = False
            self.__dict__["context_params"] = params

        @property
        def model_params(self) -> Any:
            return self.__dict__["model_params"]

        @model_params.setter
        def model_params(self, params: Any) -> None:
            params.use_extra_bufts = self._peer_use_extra_bufts
            if self._peer_progress is not None:
                params.progress_callback = self._peer_progress
            self.__dict__["model_params"] = params

    return PeerLlama


class LlamaBackend:
    """Opens GGUF files with llama.cpp (CPU, or GPU layers when built with CUDA/Metal)."""

    @property
    def max_parallel(self) -> int:
        """It batches (continuous batching, batched_llama.py) up to MAX_PARALLEL."""
        return MAX_PARALLEL

    def open(self, path: Path, options: OpenOptions, *,
             should_stop: StopCheck) -> LlamaInstance | BatchedLlamaInstance:
        """Load ``path``; see ``ModelBackend.open``."""
        pooling = _POOLING_MEAN if options.embedding and options.mean_pooling \
            else _POOLING_UNSPECIFIED
        llm = _open_llama(path, options, should_stop=should_stop, pooling=pooling)
        if options.embedding and llm.pooling_type() == _POOLING_NONE:
            # The model has no pooling of its own (a generative model registered as an
            # embedding model): average the token vectors.
            llm.close()
            llm = _open_llama(path, options, should_stop=should_stop, pooling=_POOLING_MEAN)
        instance = LlamaInstance(llm, options)
        if not options.embedding:
            instance.check_chat_format()
        if options.parallel > 1 and not options.embedding:
            return BatchedLlamaInstance.wrap(instance, llm, options)
        return instance


def _open_llama(path: Path, options: OpenOptions, *, should_stop: StopCheck,
                pooling: int) -> Llama:
    import llama_cpp

    @llama_cpp.llama_progress_callback  # type: ignore[untyped-decorator]
    def progress(_fraction: float, _user_data: object) -> bool:
        return not should_stop()  # False aborts the load

    kwargs: dict[str, Any] = {}
    n_ctx = options.context_size
    if options.parallel > 1 and not options.embedding:
        # Room for every slot's whole window; a full-size SWA cache lets a slot be
        # truncated to any prefix (prefix reuse) on sliding-window models such as Gemma 3.
        n_ctx *= options.parallel
        kwargs.update(parallel=options.parallel, swa_full=True)
    if options.n_threads is not None:
        kwargs.update(n_threads=options.n_threads, n_threads_batch=options.n_threads)
    cls = _peer_llama_class()
    try:
        llm = cls(str(path), use_extra_bufts=options.use_extra_bufts, progress=progress,
                  n_ctx=n_ctx, n_gpu_layers=options.gpu_layers,
                  chat_format=options.chat_format, embedding=options.embedding,
                  pooling_type=pooling, last_n_tokens_size=REPEAT_LAST_N, verbose=False,
                  **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        if should_stop():
            raise ModelLoadError(options.model_id, "load was stopped") from exc
        raise ModelLoadError(options.model_id, f"llama.cpp could not load {path}: {exc}") from exc
    applied = llm._model.params.use_extra_bufts
    if applied != options.use_extra_bufts:  # llama_cpp changed how it builds model params
        llm.close()
        raise ModelLoadError(options.model_id, "this llama-cpp-python ignores use_extra_bufts; "
                             "refusing to load with the wrong setting")
    if options.parallel > 1 and not options.embedding \
            and llama_cpp.llama_n_seq_max(llm._ctx.ctx) < options.parallel:
        llm.close()
        raise ModelLoadError(options.model_id, f"llama.cpp refused {options.parallel} parallel "
                             "sequences in one context")
    return llm


class _Captured(Exception):
    """Control flow only; never escapes this module."""

    def __init__(self, prompt: list[int], stop: list[str]) -> None:
        self.prompt = prompt
        self.stop = stop


class _PromptCapture:
    """Stands in for ``Llama`` when calling a llama_cpp chat handler: the handler formats
    and tokenizes the messages, then calls ``create_completion``, where we take the
    tokens and stop strings instead of generating."""

    verbose = False

    def __init__(self, llm: Llama) -> None:
        self._llm = llm

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(self._llm.tokenize(text, add_bos=add_bos, special=special))

    def create_completion(self, *, prompt: list[int], stop: list[str] | None = None,
                          **_: object) -> None:
        raise _Captured(list(prompt), list(stop or []))


class LlamaInstance:
    """One llama context; see ``ModelInstance``."""

    def __init__(self, llm: Llama, options: OpenOptions) -> None:
        self._llm = llm
        self._options = options
        self._model_id = options.model_id

    @property
    def context_size(self) -> int:
        """The window of one sequence: the context, or one slot's share of a parallel one
        (each slot's KV, running or cached, stays within it, so the slots never run out)."""
        if self._options.parallel > 1:
            return self._options.context_size
        return int(self._llm.n_ctx())

    # -- prompts -------------------------------------------------------------------

    def _chat_handler(self) -> Any:
        from llama_cpp import llama_chat_format

        llm = self._llm
        return (llm.chat_handler or llm._chat_handlers.get(llm.chat_format)
                or llama_chat_format.get_chat_completion_handler(llm.chat_format))

    def check_chat_format(self) -> None:
        """Fail at load time, not at the first chat request, on an unusable chat format."""
        try:
            self._format_chat([ChatMessage(role="user", content="hi")])
        except InvalidInferenceRequest as exc:
            raise ModelLoadError(self._model_id, exc.message) from exc
        logger.debug("model %s: chat format %s", self._model_id, self._llm.chat_format)

    def _format_chat(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        turns = [{"role": m.role, "content": m.content} for m in messages]
        if self._llm.chat_format == "gemma":
            turns = _merge_system_into_first_user(turns)
        try:
            handler = self._chat_handler()
            handler(llama=_PromptCapture(self._llm), messages=turns, stop=[], max_tokens=1)
        except _Captured as captured:
            return captured.prompt, captured.stop
        except Exception as exc:  # chat handlers raise anything: KeyError, ValueError, ...
            # The handler's exception is ours to read, not the client's: log it.
            logger.info("model %s: chat format %s failed on a request: %s: %s",
                        self._model_id, self._llm.chat_format, type(exc).__name__, exc)
            raise InvalidInferenceRequest(
                self._model_id, f"the model's chat format ({self._llm.chat_format}) cannot "
                "render these messages") from exc
        raise InvalidInferenceRequest(self._model_id, f"chat format {self._llm.chat_format!r} "
                                      "is not a plain prompt template; peerllm cannot use it")

    def encode(self, *, messages: Sequence[ChatMessage] | None, prompt: str | None,
               resume_text: str) -> EncodedPrompt:
        stops: list[str] = []
        if messages is not None:
            tokens, stops = self._format_chat(messages)
        else:
            # Like llama_cpp's create_completion: BOS if the vocab wants one, and control
            # tokens written in the prompt are parsed as such.
            tokens = self._llm.tokenize((prompt or "").encode("utf-8"), add_bos=True,
                                        special=True)
        n_prompt = len(tokens)
        if resume_text:
            tokens = tokens + self._llm.tokenize(resume_text.encode("utf-8"), add_bos=False,
                                                 special=False)
        if not tokens:
            raise InvalidInferenceRequest(self._model_id, "empty prompt")
        if len(tokens) >= self.context_size:
            raise InvalidInferenceRequest(
                self._model_id, f"prompt is {len(tokens)} tokens; the context window is "
                f"{self.context_size}")
        return EncodedPrompt(tokens=tuple(tokens), prompt_tokens=n_prompt, stops=tuple(stops))

    # -- generation ------------------------------------------------------------------

    def _is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token))

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        import llama_cpp

        if self._options.embedding:
            raise InvalidInferenceRequest(self._model_id, "this is an embedding model; it "
                                          "cannot generate text")
        llm = self._llm
        budget = min(params.max_tokens, self.context_size - len(prompt.tokens))
        scanner = StopScanner((*params.stop, *prompt.stops))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        llm.set_seed(params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        finish: FinishReason = "length"
        produced = unsent = 0
        first = last = 0.0
        if should_stop():
            return GenerationOutcome(finish_reason="cancelled", completion_tokens=0,
                                     decode_seconds=0.0)
        tokens = llm.generate(list(prompt.tokens), top_k=params.top_k, top_p=params.top_p,
                              temp=params.temperature, repeat_penalty=params.repeat_penalty,
                              min_p=MIN_P, presence_penalty=params.presence_penalty,
                              frequency_penalty=params.frequency_penalty,
                              logits_processor=self._logit_bias(params),
                              grammar=self._grammar(prompt, params))
        try:
            for token in tokens:
                last = time.perf_counter()
                if self._is_end(token):
                    finish = "stop"
                    break
                produced += 1
                unsent += 1
                if produced == 1:
                    first = last
                text = scanner.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    emit(text, unsent)
                    unsent = 0
                if scanner.stopped:
                    finish = "stop"
                    break
                if produced >= budget:
                    break
                if should_stop():  # before the next token is computed
                    finish = "cancelled"
                    break
        finally:
            tokens.close()
        if not scanner.stopped:
            tail = scanner.feed(decoder.decode(b"", final=True)) + scanner.flush()
            if tail:
                emit(tail, unsent)
        return GenerationOutcome(finish_reason=finish, completion_tokens=produced,
                                 decode_seconds=last - first if produced > 1 else 0.0)

    def _logit_bias(self, params: SamplingParams) -> Any:
        """A logits processor adding ``params.logit_bias``, or None."""
        if not params.logit_bias:
            return None
        import numpy as np
        from llama_cpp import LogitsProcessorList

        n_vocab = int(self._llm.n_vocab())
        ids = [t for t, _ in params.logit_bias]
        if max(ids) >= n_vocab:
            raise InvalidInferenceRequest(self._model_id, f"logit_bias: token {max(ids)} is not "
                                          f"in the vocabulary (0..{n_vocab - 1})")
        index = np.array(ids, dtype=np.intc)
        bias = np.array([b for _, b in params.logit_bias], dtype=np.single)

        def add_bias(_input_ids: Any, scores: Any) -> Any:
            # llama.cpp hands the processor the full vocabulary in token-id order.
            scores[index] += bias
            return scores

        return LogitsProcessorList([add_bias])

    def _grammar(self, prompt: EncodedPrompt, params: SamplingParams) -> Any:
        """The llama.cpp grammar for ``params.json_schema``, checked to compile, or None."""
        gbnf = checked_gbnf(self._model_id, prompt, params)
        if gbnf is None:
            return None
        import llama_cpp
        from llama_cpp import LlamaGrammar

        # llama_cpp adds a grammar sampler to its chain without checking it parsed (a NULL
        # sampler would crash the process): parse it once here first.
        probe = llama_cpp.llama_sampler_init_grammar(self._llm._model.vocab,
                                                     gbnf.encode("utf-8"), b"root")
        if not probe:
            raise InvalidInferenceRequest(self._model_id, "json_schema: llama.cpp could not "
                                          "parse the grammar compiled from it")
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(gbnf, verbose=False)

    def benchmark(self, n_tokens: int) -> Benchmark:
        """Greedy generation of ``n_tokens`` from a fixed prompt, end-of-text ignored."""
        llm = self._llm
        prompt = llm.tokenize(BENCHMARK_PROMPT, add_bos=True, special=False)
        # The first decode on a fresh context pays for thread start-up and for faulting in
        # the mmapped weights: get that out of the way on another prompt, so the timed run
        # measures a steady-state prompt evaluation and decode.
        warm = llm.generate(llm.tokenize(b"Hello", add_bos=True, special=False), temp=0.0,
                            repeat_penalty=1.0)
        next(warm)
        warm.close()
        start = time.perf_counter()
        first = start
        count = 0
        tokens = llm.generate(prompt, temp=0.0, repeat_penalty=1.0)
        try:
            for _ in tokens:
                count += 1
                if count == 1:
                    first = time.perf_counter()
                if count >= n_tokens:
                    break
        finally:
            tokens.close()
        end = time.perf_counter()
        tps = (count - 1) / (end - first) if count > 1 and end > first else None
        return Benchmark(tokens=count, seconds=end - start, tokens_per_second=tps,
                         ttft_s=first - start)

    def embed(self, inputs: Sequence[str]) -> Embedded:
        if not self._options.embedding:
            raise InvalidInferenceRequest(self._model_id, "not an embedding context")
        if not inputs:
            return Embedded(vectors=[], prompt_tokens=0)
        llm = self._llm
        vectors, tokens = llm.embed(list(inputs), normalize=True, truncate=True,
                                    return_count=True)
        # Per input, as Llama.embed counts them (tokenized with BOS, cut to n_batch), so
        # a batch of several requests (embedding_batch.py) can give each its usage.
        per_input = tuple(min(len(llm.tokenize(text.encode("utf-8"))), int(llm.n_batch))
                          for text in inputs)
        return Embedded(vectors=[[float(x) for x in vec] for vec in vectors],
                        prompt_tokens=int(tokens), input_tokens=per_input)

    def close(self) -> None:
        self._llm.close()


def _merge_system_into_first_user(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """Gemma has no system role (llama_cpp's formatter drops it): prepend the system text
    to the first user turn, as Google's own template does."""
    system = "\n\n".join(t["content"] for t in turns if t["role"] == "system")
    rest = [dict(t) for t in turns if t["role"] != "system"]
    if system:
        for turn in rest:
            if turn["role"] == "user":
                turn["content"] = f"{system}\n\n{turn['content']}"
                break
        else:
            rest.insert(0, {"role": "user", "content": system})
    return rest

