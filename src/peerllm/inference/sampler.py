"""Per-request llama.cpp sampler chains for the batched runtime (low-level ctypes API).

The chain is the one llama-cpp-python's ``Llama.generate`` builds, in the same order, so a
batched sequence samples exactly what a single-stream generation would with the same
parameters and seed: logit bias, penalties (over generated tokens only, the last
REPEAT_LAST_N), grammar, then greedy at temperature 0, or top-k, typical (1.0, a no-op
kept for parity), top-p, min-p (MIN_P), temperature and a seeded draw. Bias and the
repeat penalty are done by greedy.LogitAdjuster in numpy instead when that is exact, and
plain greedy requests skip the chain altogether (``open_sampler``).

llama_cpp is imported lazily; its failures become InvalidInferenceRequest (chained).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidField, InvalidInferenceRequest
from .grammar import schema_to_gbnf
from .greedy import GreedySampler, LogitAdjuster, adjusts_in_place, greedy_applies
from .request import MIN_P, REPEAT_LAST_N, SamplingParams

if TYPE_CHECKING:
    from .backend import EncodedPrompt


def checked_gbnf(model_id: str, prompt: EncodedPrompt, params: SamplingParams) -> str | None:
    """The GBNF grammar for ``params.json_schema`` (None for free text).

    Raises:
        InvalidInferenceRequest: the schema does not compile, or the request resumes a
            partial answer (the grammar would have to accept a peer's text first, and
            llama.cpp aborts the process on text a grammar refuses).
    """
    if params.json_schema is None:
        return None
    if len(prompt.tokens) > prompt.prompt_tokens:
        raise InvalidInferenceRequest(model_id, "structured output (json_schema) cannot "
                                      "resume a partial answer")
    try:
        return schema_to_gbnf(params.json_schema)
    except InvalidField as exc:
        raise InvalidInferenceRequest(model_id, str(exc)) from exc


class Sampler(Protocol):
    """What the step thread needs from one request's sampler."""

    def sample(self, ctx: Any, index: int) -> int:
        """Sample from the logits at batch row ``index`` and accept the token."""
        ...

    def close(self) -> None: ...


def open_sampler(*, model_id: str, vocab: Any, n_vocab: int, params: SamplingParams,
                 gbnf: str | None) -> Sampler:
    """The cheapest sampler that picks what llama.cpp's chain would: greedy.py's for
    plain greedy requests, else the C chain (with bias and repeat penalty done in numpy
    first when that is exact, greedy.adjusts_in_place).

    Raises:
        InvalidInferenceRequest: a logit_bias token outside the vocabulary, or a grammar
            llama.cpp cannot parse.
    """
    if greedy_applies(params, gbnf):
        _check_bias(model_id, n_vocab, params)
        return GreedySampler(n_vocab=n_vocab, params=params)
    adjuster = None
    if adjusts_in_place(params):
        _check_bias(model_id, n_vocab, params)
        adjuster = LogitAdjuster(n_vocab=n_vocab, params=params)
    return SamplerChain(model_id=model_id, vocab=vocab, n_vocab=n_vocab, params=params,
                        gbnf=gbnf, adjuster=adjuster)


def _check_bias(model_id: str, n_vocab: int, params: SamplingParams) -> None:
    if params.logit_bias:
        worst = max(t for t, _ in params.logit_bias)
        if worst >= n_vocab:
            raise InvalidInferenceRequest(model_id, f"logit_bias: token {worst} is not "
                                          f"in the vocabulary (0..{n_vocab - 1})")


class SamplerChain:
    """One request's sampler state (penalty history, grammar state, RNG); owned by the
    runtime's step thread, freed by ``close``."""

    def __init__(self, *, model_id: str, vocab: Any, n_vocab: int, params: SamplingParams,
                 gbnf: str | None, adjuster: LogitAdjuster | None = None) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._adjuster = adjuster  # does bias and penalties in place; None: the chain
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain: Any = llama_cpp.llama_sampler_chain_init(chain_params)
        try:
            self._build(model_id=model_id, vocab=vocab, n_vocab=n_vocab, params=params,
                        gbnf=gbnf)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._chain, sampler)  # the chain owns it now

    def _build(self, *, model_id: str, vocab: Any, n_vocab: int, params: SamplingParams,
               gbnf: str | None) -> None:
        lib = self._lib
        # With an adjuster, bias and the repeat penalty are applied to the row before the
        # chain reads it; otherwise the chain does them.
        if self._adjuster is None and params.logit_bias:
            _check_bias(model_id, n_vocab, params)
            biases = (lib.llama_logit_bias * len(params.logit_bias))(
                *(lib.llama_logit_bias(token=t, bias=b) for t, b in params.logit_bias))
            self._add(lib.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias),
                                                        biases))
        if self._adjuster is None:
            self._add(lib.llama_sampler_init_penalties(n_vocab, REPEAT_LAST_N,
                                                       params.repeat_penalty,
                                                       params.frequency_penalty,
                                                       params.presence_penalty))
        if gbnf is not None:
            grammar = lib.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
            if not grammar:  # adding a NULL sampler would crash the process
                raise InvalidInferenceRequest(model_id, "json_schema: llama.cpp could not "
                                              "parse the grammar compiled from it")
            self._add(grammar)
        if params.temperature == 0.0:
            self._add(lib.llama_sampler_init_greedy())
            return
        seed = params.seed if params.seed is not None else lib.LLAMA_DEFAULT_SEED
        self._add(lib.llama_sampler_init_top_k(params.top_k))
        self._add(lib.llama_sampler_init_typical(1.0, 1))
        self._add(lib.llama_sampler_init_top_p(params.top_p, 1))
        self._add(lib.llama_sampler_init_min_p(MIN_P, 1))
        self._add(lib.llama_sampler_init_temp(params.temperature))
        self._add(lib.llama_sampler_init_dist(seed))

    def sample(self, ctx: Any, index: int) -> int:
        """Sample from the logits at batch row ``index`` and accept the token."""
        if self._adjuster is not None:
            self._adjuster.adjusted_row(ctx, index)
        token = int(self._lib.llama_sampler_sample(self._chain, ctx, index))
        if self._adjuster is not None:
            self._adjuster.accept(token)
        return token

    def close(self) -> None:
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None

