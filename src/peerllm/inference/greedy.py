"""Greedy sampling for the batched runtime without llama.cpp's sampler chain.

llama.cpp's ``llama_sampler_sample`` copies the whole logits row into a candidate array
(262k entries for Gemma 3) and the penalties sampler then looks every one of them up in
a hash map: ~3 ms per sequence per step on this machine, serial, in the step thread.
Greedy needs none of that: the few logits that logit bias or the repeat penalty change
are changed in place (the row is this sequence's alone, read once), then numpy's argmax
picks the first largest, as llama.cpp's greedy sampler does.

Exactly llama.cpp's arithmetic (float32, same operations, same order): bias added per
entry in order, then for each token among the last REPEAT_LAST_N generated ones
``logit * p`` when ``logit <= 0`` else ``logit / p``. Frequency and presence penalties
(a multiply-add, which the C build may fuse) and grammars stay with the C chain
(sampler.py decides).
"""

from __future__ import annotations

import ctypes
from collections import deque
from typing import Any

import numpy as np

from .request import REPEAT_LAST_N, SamplingParams


def greedy_applies(params: SamplingParams, gbnf: str | None) -> bool:
    """True when ``GreedySampler`` picks exactly what the C chain would."""
    return (params.temperature == 0.0 and gbnf is None and params.frequency_penalty == 0.0
            and params.presence_penalty == 0.0)


class GreedySampler:
    """One greedy request's state (its recent tokens); used by the step thread only."""

    def __init__(self, *, n_vocab: int, params: SamplingParams) -> None:
        import llama_cpp

        self._logits_ith = llama_cpp.llama_get_logits_ith
        self._n_vocab = n_vocab
        self._bias_ids = np.array([t for t, _ in params.logit_bias], dtype=np.intp)
        self._bias = np.array([b for _, b in params.logit_bias], dtype=np.float32)
        self._penalty = np.float32(params.repeat_penalty)
        self._penalised = params.repeat_penalty != 1.0 and REPEAT_LAST_N > 0
        self._recent: deque[int] = deque(maxlen=REPEAT_LAST_N)

    def sample(self, ctx: Any, index: int) -> int:
        """The token with the largest (biased, penalised) logit at batch row ``index``."""
        pointer = self._logits_ith(ctx, index)
        row = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                    shape=(self._n_vocab,))
        if self._bias_ids.size:
            np.add.at(row, self._bias_ids, self._bias)
        if self._penalised and self._recent:
            ids = np.fromiter(set(self._recent), dtype=np.intp)
            old = row[ids]
            row[ids] = np.where(old <= 0, old * self._penalty, old / self._penalty)
        token = int(row.argmax())
        self._recent.append(token)
        return token

    def close(self) -> None:
        """Nothing to free (the C chain's counterpart frees its chain)."""
