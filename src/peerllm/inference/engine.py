"""The local inference engine: stream tokens for a request from a model in the registry.

Generation runs in ``trio.to_thread.run_sync`` (never abandoned) while holding a context
from the model's SlotLimiter (our own requests before peers', priority.py); the thread
pushes text back through a small bounded ``TokenHandoff`` (no round trip into trio per
token; token_handoff.py says why), so a slow consumer slows generation down instead of
growing a buffer. The thread
polls a ``threading.Event`` (also set when the waiting task is cancelled) between tokens
and returns early, which frees the model for the next request within one token.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio

from ..errors import InferenceCancelled, InferenceTimeout
from ..events import Done, TokenChunk
from ._concurrency import reraise_unwrapped, stop_check
from .admission import Admission
from .backend import Embedded, GenerationOutcome, ModelInstance
from .embedding_batch import EmbeddingBatcher, EmbeddingStatistics
from .prefixes import PrefixBooks
from .priority import Origin
from .registry import ModelRegistry
from .request import ChatMessage as ChatMessage
from .request import GenerationRequest as GenerationRequest
from .request import SamplingParams as SamplingParams
from .slots import ModelSlot
from .token_handoff import TokenHandoff

__all__ = ["ChatMessage", "Engine", "GenerationRequest", "GenerationStream", "SamplingParams"]

CHANNEL_SIZE: Final = 16  # chunks buffered between the generating thread and the consumer


@dataclass(frozen=True)
class _Failure:
    error: Exception


_Item = TokenChunk | Done | _Failure


class GenerationStream:
    """What ``Engine.stream`` yields: async-iterate it for TokenChunk items, then one Done.

    A failure (ModelLoadError, InferenceTimeout, InvalidInferenceRequest, ...) is raised
    from the iteration, in the consumer's task. ``cancel()`` stops generation at the next
    token; the stream then ends with ``Done(finish_reason="cancelled")``.
    """

    def __init__(self, receive: TokenHandoff[_Item], stop: threading.Event) -> None:
        self._receive = receive
        self._stop = stop
        self._finished = False

    def cancel(self) -> None:
        """Ask the generation to stop at the next token (thread-safe, idempotent)."""
        self._stop.set()

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> TokenChunk | Done:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:  # the producer was cancelled before it could finish
            self._finished = True
            raise StopAsyncIteration from None
        return self._checked(item)

    def next_nowait(self) -> TokenChunk | Done | None:
        """The next item if one is ready, else None (also after the end): lets a writer
        take every chunk produced while its last write was in flight, without waiting.

        Raises: what iterating raises.
        """
        if self._finished:
            return None
        try:
            item = self._receive.receive_nowait()
        except trio.WouldBlock:
            return None
        except trio.EndOfChannel:
            self._finished = True
            return None
        return self._checked(item)

    def _checked(self, item: _Item) -> TokenChunk | Done:
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        if isinstance(item, Done):
            self._finished = True
        return item


class Engine:
    """Runs generation and embedding requests on the registry's models."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self.prefixes = PrefixBooks()  # the chats our batch slots hold, for node-info
        # One embedding batcher per model version, gone with the version.
        self._embedders: weakref.WeakKeyDictionary[ModelSlot, EmbeddingBatcher] = \
            weakref.WeakKeyDictionary()

    @property
    def registry(self) -> ModelRegistry:
        return self._registry

    @asynccontextmanager
    async def stream(self, req: GenerationRequest, *, origin: Origin = "local"
                     ) -> AsyncIterator[GenerationStream]:
        """Start generating ``req``; iterate the yielded stream for the output.

        ``origin`` says who placed the request: "local" (our own users, through our
        router or the library) goes before "peer" (forwarded by a peer, mesh.serving)
        in the model's queue, and may queue even when peers filled it.

        The request is admitted before anything is yielded, so a full queue fails here.
        Everything later (waiting in the queue, loading the model, generating) happens
        while the caller iterates, and is bounded by ``inference_timeout_s``.

        Raises:
            ModelNotFound, ModelBusy, InferenceCancelled: on entry.
            ModelLoadError, InvalidInferenceRequest, InferenceTimeout: from the iteration;
            InferenceCancelled too when the model is removed with ``cancel=True``.

        Cancellation: leaving the block (normally, by an exception, or by a cancelled
        scope) stops generation at the next token and returns once the worker thread is
        done with the model, which is at most one token (or one prompt evaluation) later.
        """
        accepted = trio.current_time()
        admission = self._registry.admit(req.model, origin=origin)
        handoff = TokenHandoff[_Item](CHANNEL_SIZE)
        stop = threading.Event()
        with admission:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._produce, admission, req, handoff, stop, accepted)
                    try:
                        yield GenerationStream(handoff, stop)
                    finally:
                        stop.set()
                        handoff.close_consumer()  # a thread waiting for room goes on
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # _produce never raises, so the group holds the caller's own exception.
                reraise_unwrapped(group)

    async def complete(self, req: GenerationRequest) -> tuple[str, Done]:
        """Generate ``req`` to the end; return the whole text and the Done record.

        Raises: as ``stream``.
        """
        parts: list[str] = []
        async with self.stream(req) as stream:
            async for item in stream:
                if isinstance(item, Done):
                    return "".join(parts), item
                parts.append(item.text)
        raise InferenceCancelled(req.model, "generation ended without a result")

    async def embed(self, model: str, inputs: Sequence[str]) -> Embedded:
        """One L2-normalised vector per input (mean-pooled for generative models), and
        the tokens read.

        Raises:
            ModelNotFound, ModelBusy, ModelLoadError, InferenceTimeout, InferenceCancelled.
        """
        if isinstance(inputs, str):
            raise TypeError("inputs: expected a sequence of strings, not a string")
        texts = list(inputs)
        timeout = self._registry.config.inference_timeout_s
        with self._registry.admit(model) as admission, admission.cancellable(), \
                trio.move_on_after(timeout):

            async def run(batch: list[str]) -> Embedded:  # we lead a batch (ours among it)
                async with admission.instance(embedding=True) as instance:
                    return await trio.to_thread.run_sync(instance.embed, batch)

            batcher = self._embedders.setdefault(admission.slot, EmbeddingBatcher())
            return await batcher.embed(texts, run)
        raise InferenceTimeout(model, timeout)  # only the deadline gets here

    def embedding_statistics(self) -> EmbeddingStatistics:
        """Embedding requests served and the batches (``embed`` calls) that served them,
        over the model versions still registered (embedding_batch.py; the test seam)."""
        stats = [b.statistics() for b in self._embedders.values()]
        return EmbeddingStatistics(requests=sum(s.requests for s in stats),
                                   batches=sum(s.batches for s in stats))

    # -- the producer task -------------------------------------------------------------

    async def _produce(self, admission: Admission, req: GenerationRequest,
                       send: TokenHandoff[_Item], stop: threading.Event,
                       accepted: float) -> None:
        """Generate into ``send``; never raises (failures are sent as items)."""
        timeout = self._registry.config.inference_timeout_s
        first: list[float] = []  # trio time of the first chunk
        should_stop = stop_check(stop)

        def note_first() -> None:  # in trio's thread, once
            first.append(trio.current_time())

        def emit(text: str, n_tokens: int) -> None:  # in the worker thread
            if not first:
                # One round trip for the first token only: TTFT is measured on trio's
                # clock, like everything else here (tests run it on a MockClock).
                try:
                    trio.from_thread.run_sync(note_first)
                except trio.RunFinishedError:
                    stop.set()
                    return
            # A consumer that stopped reading leaves the thread waiting for room: the
            # wait polls should_stop, so a timeout or a deleted model still ends it.
            if not send.put(TokenChunk(text=text, n_tokens=n_tokens), should_stop):
                stop.set()  # the consumer is gone: nobody wants more tokens

        def generate(instance: ModelInstance) -> tuple[int, GenerationOutcome]:
            prompt = instance.encode(messages=req.messages, prompt=req.prompt,
                                     resume_text=req.resume_text)
            outcome = instance.generate(prompt, req.params, emit=emit,
                                        should_stop=should_stop)
            return prompt.prompt_tokens, outcome

        item: _Item = _Failure(InferenceCancelled(req.model, "generation did not finish"))
        admission.on_cancel(stop.set)  # the model was deleted: stop at the next token
        try:
            with admission.cancel_scope, trio.move_on_after(timeout) as scope:
                try:
                    async with admission.instance() as instance:
                        watched = self.prefixes.watching(instance, req=req,
                                                         model_id=admission.slot.spec.id)
                        prompt_tokens, outcome = await trio.to_thread.run_sync(generate,
                                                                               watched)
                except Exception as exc:  # delivered to the consumer, raised there
                    item = _Failure(exc)
                else:
                    now = trio.current_time()
                    ttft_ms = (first[0] - accepted) * 1000.0 if first else None
                    admission.record(completion_tokens=outcome.completion_tokens,
                                     decode_seconds=outcome.decode_seconds, ttft_ms=ttft_ms,
                                     total_s=now - accepted)
                    item = Done(finish_reason=outcome.finish_reason, prompt_tokens=prompt_tokens,
                                completion_tokens=outcome.completion_tokens, ttft_ms=ttft_ms,
                                total_ms=(now - accepted) * 1000.0, model=req.model)
            # The deadline stopped the thread ("cancelled" outcome) or the wait for it.
            timed_out = scope.cancel_called and (
                scope.cancelled_caught
                or (isinstance(item, Done) and item.finish_reason == "cancelled"))
            finished = isinstance(item, Done) and item.finish_reason != "cancelled"
            if admission.cancelled is not None and not finished:
                item = _Failure(InferenceCancelled(req.model, admission.cancelled))
            elif timed_out:
                item = _Failure(InferenceTimeout(req.model, timeout))
            send.put_nowait(item)  # dropped if the consumer left: it no longer cares
        finally:
            send.close_producer()
