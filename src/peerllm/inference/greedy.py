"""Sampling work done in numpy on the logits row, instead of llama.cpp's sampler chain.

llama.cpp's ``llama_sampler_sample`` copies the whole logits row into a candidate array
(262k entries for Gemma 3) and its penalties sampler then looks every one of them up in
a hash map: ~3 ms per sequence per step on this machine, serial, in the step thread.
The few logits that logit bias and the repeat penalty change can instead be changed in
place (the row is this sequence's alone, read once) before anything reads them
(``LogitAdjuster``). Greedy then needs no chain at all: numpy's argmax picks the first
largest, as llama.cpp's greedy sampler does (``GreedySampler``). Other requests keep the
C chain for the rest (grammar, top-k ... seeded draw), without its bias and penalties
samplers (sampler.py).

Exactly llama.cpp's arithmetic (float32, same operations, same order): bias added per
entry in order, then for each token among the last REPEAT_LAST_N generated ones
``logit * p`` when ``logit <= 0`` else ``logit / p``. Requests with a frequency or
presence penalty (a multiply-add, which the C build may fuse) keep the full C chain.
"""

from __future__ import annotations

import ctypes
from collections import deque
from typing import Any

import numpy as np

from .request import REPEAT_LAST_N, SamplingParams


def adjusts_in_place(params: SamplingParams) -> bool:
    """True when ``LogitAdjuster`` reproduces the C chain's bias and penalties."""
    return params.frequency_penalty == 0.0 and params.presence_penalty == 0.0


def greedy_applies(params: SamplingParams, gbnf: str | None) -> bool:
    """True when ``GreedySampler`` picks exactly what the C chain would."""
    return params.temperature == 0.0 and gbnf is None and adjusts_in_place(params)


class LogitAdjuster:
    """One request's logit bias and repeat penalty, applied to its logits row in place;
    keeps the tokens it generated (the penalty's window). Step thread only."""

    def __init__(self, *, n_vocab: int, params: SamplingParams) -> None:
        import llama_cpp

        self._logits_ith = llama_cpp.llama_get_logits_ith
        self._n_vocab = n_vocab
        self._bias_ids = np.array([t for t, _ in params.logit_bias], dtype=np.intp)
        self._bias = np.array([b for _, b in params.logit_bias], dtype=np.float32)
        self._penalty = np.float32(params.repeat_penalty)
        self._penalised = params.repeat_penalty != 1.0 and REPEAT_LAST_N > 0
        self._recent: deque[int] = deque(maxlen=REPEAT_LAST_N)

    def adjusted_row(self, ctx: Any, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The logits at batch row ``index``, biased and penalised (a view: changed in
        the context's own buffer, where llama.cpp's samplers read them next)."""
        pointer = self._logits_ith(ctx, index)
        row = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                    shape=(self._n_vocab,))
        if self._bias_ids.size:
            np.add.at(row, self._bias_ids, self._bias)
        if self._penalised and self._recent:
            ids = np.fromiter(set(self._recent), dtype=np.intp)
            old = row[ids]
            row[ids] = np.where(old <= 0, old * self._penalty, old / self._penalty)
        return row

    def accept(self, token: int) -> None:
        self._recent.append(token)


class GreedySampler:
    """A greedy request's sampler: adjusted logits, then argmax."""

    def __init__(self, *, n_vocab: int, params: SamplingParams) -> None:
        self._adjust = LogitAdjuster(n_vocab=n_vocab, params=params)

    def sample(self, ctx: Any, index: int) -> int:
        """The token with the largest (biased, penalised) logit at batch row ``index``."""
        token = int(self._adjust.adjusted_row(ctx, index).argmax())
        self._adjust.accept(token)
        return token

    def close(self) -> None:
        """Nothing to free (the C chain's counterpart frees its chain)."""
