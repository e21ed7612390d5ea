"""A request's hold on a model slot: its place in the queue, one context checked out, stats.

The registry hands out an ``Admission`` from ``ModelRegistry.admit``; the admission asks
the registry for the loaded model through the ``ModelSource`` protocol and opens extra
contexts through the ``ModelLoader``. The request's work runs inside the admission's
``cancel_scope``, which the registry cancels when the model is deleted under it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

import trio

from ..errors import InferenceCancelled, InvalidInferenceRequest
from .backend import ModelInstance
from .loading import ModelLoader
from .priority import Origin
from .slots import LoadedModel, ModelSlot, ema
from .specs import ModelSpec


class ModelSource(Protocol):
    """What an admission needs from the registry: the slot's model, loaded."""

    async def ensure_loaded(self, slot: ModelSlot) -> LoadedModel:
        """Load the model or wait for the load in flight.

        Raises ModelLoadError, InferenceCancelled (registry closing)."""
        ...

    def released(self, slot: ModelSlot) -> None:
        """A request left ``slot``'s queue (its idle-unload clock may start)."""
        ...


class Admission:
    """One request's place in a model's queue. Release it (``with``) when done."""

    def __init__(self, source: ModelSource, loader: ModelLoader, slot: ModelSlot, *,
                 origin: Origin) -> None:
        self._source = source
        self._loader = loader
        self.slot = slot
        self.origin = origin
        self._released = False
        self.cancel_scope = trio.CancelScope()
        self.cancelled: str | None = None  # why the registry ended it
        self._on_cancel: list[Callable[[], None]] = []
        slot.admissions.add(self)

    @property
    def spec(self) -> ModelSpec:
        return self.slot.spec

    def cancel(self, reason: str) -> None:
        """End the request: its scope is cancelled, its ``on_cancel`` callbacks run."""
        if self.cancelled is None:
            self.cancelled = reason
        for callback in self._on_cancel:
            callback()
        self.cancel_scope.cancel()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (sync, e.g. stop a worker thread) when the request is ended."""
        self._on_cancel.append(callback)
        if self.cancelled is not None:
            callback()

    @contextmanager
    def cancellable(self) -> Iterator[None]:
        """Run the request's work in ``cancel_scope``; a cancel ends the block with
        InferenceCancelled (the reason as its message)."""
        with self.cancel_scope:
            yield
        if self.cancelled is not None:
            raise InferenceCancelled(self.slot.spec.id, self.cancelled)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.slot.admissions.discard(self)
            self.slot.pending -= 1
            if self.origin == "local":
                self.slot.pending_local -= 1
            self._source.released(self.slot)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @asynccontextmanager
    async def instance(self, *, embedding: bool = False) -> AsyncIterator[ModelInstance]:
        """Wait for a free context (loading the model if needed) and hold it.

        Raises:
            ModelLoadError, InferenceCancelled.

        Local requests are given a context before peers' (``priority.SlotLimiter``).

        Cancellation: leaves the queue (or stops waiting for the load) at once.
        """
        slot = self.slot
        if slot.spec.type == "embedding" and not embedding:
            raise InvalidInferenceRequest(slot.spec.id, "this is an embedding model; it "
                                          "cannot generate text")
        while True:
            async with slot.limiter.hold(self.origin):
                loaded = await self._source.ensure_loaded(slot)
                if slot.limiter.overcommitted(self.origin):
                    # The load resolved fewer slots ("auto") than were granted while it
                    # ran: without a slot of the new count, a context opened here would
                    # be one more than the memory reserved. Queue again.
                    continue
                instance = await self._checkout(loaded, embedding)
                slot.active += 1
                try:
                    yield instance
                finally:
                    slot.active -= 1
                    slot.uses += 1
                    slot.last_used = trio.current_time()
                    _checkin(loaded, instance, embedding)
                return

    def record(self, *, completion_tokens: int, decode_seconds: float, ttft_ms: float | None,
               total_s: float) -> None:
        """Fold one finished generation into the model's statistics."""
        slot = self.slot
        slot.tokens_generated += completion_tokens
        if completion_tokens > 1 and decode_seconds > 0:
            slot.tokens_per_second = ema(slot.tokens_per_second,
                                          (completion_tokens - 1) / decode_seconds)
        if ttft_ms is not None:
            slot.ttft_ms = ema(slot.ttft_ms, ttft_ms)
        slot.request_s = ema(slot.request_s, total_s)

    async def _checkout(self, loaded: LoadedModel, embedding: bool) -> ModelInstance:
        pool = loaded.idle.setdefault(embedding, [])
        loaded.busy += 1
        shared = self._loader.shares_context(self.slot, embedding=embedding)
        if pool:
            # A batched context serves every request at once (its slots, which the
            # slot limiter counts); other contexts serve one request at a time.
            return pool[0] if shared else pool.pop()
        # All contexts of this kind are busy (max_concurrent > 1) or none exists yet (the
        # first embedding request on a generative model): open one more.
        loaded.created[embedding] = loaded.created.get(embedding, 0) + 1
        try:
            instance = await self._loader.open_context(loaded.path, self.slot,
                                                       embedding=embedding)
        except BaseException:
            loaded.created[embedding] -= 1
            _checkin(loaded, None, embedding)
            raise
        if shared:
            pool.append(instance)
        return instance


def _checkin(loaded: LoadedModel, instance: ModelInstance | None, embedding: bool) -> None:
    pool = loaded.idle.setdefault(embedding, [])
    if instance is not None and not any(i is instance for i in pool):  # shared: stays
        pool.append(instance)
    loaded.busy -= 1
    if loaded.retired and loaded.busy == 0:
        loaded.drained.set()
