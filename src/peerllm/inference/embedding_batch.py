"""Concurrent embedding requests to one model share llama_decode calls.

Each model version has an ``EmbeddingBatcher``. A request queues its inputs; if no batch
of that model is running, the request leads: it takes the queued requests (oldest first,
up to BATCH_INPUTS inputs, its own among them sooner or later), holds one embedding
context through its own admission, and embeds all their inputs in one ``embed`` call,
which llama.cpp decodes in as few ``llama_decode`` calls as n_batch and n_seq_max allow
(llama_cpp's ``Llama.embed``). The vectors and token counts are split back per request.
Requests that queued meanwhile wait for the leader to finish, then the oldest of them
leads the next batch. So a burst of N requests costs one context and a few decodes
instead of N of each, and the vectors are the ones each would get alone (every input
is its own sequence; the KV cache is cleared between decodes).

A batch refused for its inputs (InvalidInferenceRequest: one too long, say) is retried
request by request, so only the request at fault gets the error; any other failure (the
model would not load) is every batched request's. A request cancelled while queued
leaves the queue; once taken into a batch, its result is dropped. If the leader is
cancelled before its batch ran, the others still waiting queue again and the oldest
leads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from ..errors import InferenceError, InvalidInferenceRequest
from .backend import Embedded

BATCH_INPUTS: Final = 256
"""Inputs one batch takes at most (a request's own are never split across batches)."""

RunBatch = Callable[[list[str]], Awaitable[Embedded]]
"""Embeds inputs on a context held through the leading request's admission."""


@dataclass(frozen=True, kw_only=True)
class EmbeddingStatistics:
    """The test seam: requests served and the ``embed`` calls (batches) that served them."""

    requests: int
    batches: int


@dataclass(eq=False)
class _Pending:
    inputs: list[str]
    done: trio.Event = field(default_factory=trio.Event)
    result: Embedded | None = None
    error: InferenceError | None = None
    taken: bool = False
    abandoned: bool = False  # its request left (cancelled) while in a batch


class EmbeddingBatcher:
    """See the module docstring. Used from one trio run."""

    def __init__(self) -> None:
        self._queue: deque[_Pending] = deque()
        self._running = False
        self._idle = trio.Event()  # set when a batch ends; replaced for the next one
        self._requests = 0
        self._batches = 0

    def statistics(self) -> EmbeddingStatistics:
        return EmbeddingStatistics(requests=self._requests, batches=self._batches)

    async def embed(self, inputs: Sequence[str], run: RunBatch) -> Embedded:
        """``inputs``' vectors, embedded with whatever else is queued.

        Raises:
            What ``run`` raises for this request's inputs (InferenceError).
        """
        me = _Pending(list(inputs))
        self._queue.append(me)
        try:
            while not me.done.is_set():
                if self._running:
                    await self._idle.wait()
                else:
                    await self._lead(run)
        finally:
            if not me.taken:
                self._queue.remove(me)
            elif not me.done.is_set():
                me.abandoned = True  # in a batch: not to be queued again if it is undone
        self._requests += 1
        if me.error is not None:
            raise me.error
        assert me.result is not None
        return me.result

    async def _lead(self, run: RunBatch) -> None:
        batch = self._take()
        self._running = True
        try:
            await self._serve(batch, run)
        finally:
            self._running = False
            # The leader was cancelled before the batch ran: the others queue again, in
            # their order, and the oldest of them leads next.
            for entry in reversed(batch):
                if entry.abandoned:
                    continue  # its request is gone: nobody to embed it for
                if entry.result is None and entry.error is None:
                    entry.taken = False
                    self._queue.appendleft(entry)
                else:
                    entry.done.set()
            idle, self._idle = self._idle, trio.Event()
            idle.set()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].inputs) <= BATCH_INPUTS):
            entry = self._queue.popleft()
            entry.taken = True
            count += len(entry.inputs)
            batch.append(entry)
        return batch

    async def _serve(self, batch: list[_Pending], run: RunBatch) -> None:
        try:
            self._batches += 1
            out = await run([text for entry in batch for text in entry.inputs])
        except InvalidInferenceRequest as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for entry in batch:  # find the request at fault; the others still succeed
                try:
                    self._batches += 1
                    entry.result = await run(entry.inputs)
                except InferenceError as one:
                    entry.error = one
            return
        except InferenceError as exc:  # the model, not an input: the same for everyone
            for entry in batch:
                entry.error = exc
            return
        for entry, share in zip(batch, split(out, [len(e.inputs) for e in batch]),
                                strict=True):
            entry.result = share


def split(whole: Embedded, sizes: Sequence[int]) -> list[Embedded]:
    """``whole`` cut into consecutive parts of ``sizes`` inputs. Token counts come from
    ``whole.input_tokens``; a backend that does not count per input has its total shared
    out in proportion to the inputs."""
    parts: list[Embedded] = []
    start = 0
    n = len(whole.vectors) or 1
    for size in sizes:
        end = start + size
        if whole.input_tokens:
            tokens = sum(whole.input_tokens[start:end])
        else:
            tokens = whole.prompt_tokens * end // n - whole.prompt_tokens * start // n
        parts.append(Embedded(vectors=whole.vectors[start:end], prompt_tokens=tokens,
                              input_tokens=whole.input_tokens[start:end]))
        start = end
    return parts
