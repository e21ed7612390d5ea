"""The model registry: which models exist, which are loaded, their queues and memory budget.

Create it with ``open_registry``: loads, preloads and frees run as tasks in the
registry's nursery, so a load shared by several waiting requests survives any one of
them going away, and leaving the ``async with`` frees every model.

Per model: a ``SlotLimiter(max_concurrent)`` (one llama context per running request;
our own requests before peers', peers capped at ``peer_slots``) and at most ``max_queue``
more requests waiting for it; past that, ModelBusy. Our own requests are counted on
their own against that bound, so peers filling the queue never make one of ours busy.
A model may be given an idle time (Ollama's ``keep_alive``): one task in the nursery
unloads it once it has been idle that long (0: as soon as its requests are done).
Memory: each load reserves an estimate (memory.py) against the cache budget, evicting
idle models by the configured policy when it would not fit. The load itself (which file,
opening it, the benchmark) is loading.py's; a request's hold on a model is admission.py's.
"""

from __future__ import annotations

import builtins
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import psutil
import trio

from ..config import InferenceConfig
from ..errors import (
    ConfigError,
    InferenceCancelled,
    InvalidInferenceRequest,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
)
from ._concurrency import reraise_unwrapped
from .admission import Admission
from .backend import ModelBackend, ModelInstance
from .loading import ModelLoader, record_benchmark
from .memory import CacheEntry, estimate_memory_bytes, pick_victims
from .priority import Origin, SlotLimiter
from .slots import LoadedModel, LoadJob, ModelSlot, gib, startup_problem
from .slots import ModelState as ModelState
from .slots import ModelStatus as ModelStatus
from .specs import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_S: Final = 2.0  # assumed request duration before any was measured
CLOSE_GRACE_S: Final = 30.0  # how long aclose waits for running requests to finish


class ModelRegistry:
    """Models this node can serve. Use ``open_registry``; see the module docstring."""

    def __init__(self, specs: Sequence[ModelSpec], *, config: InferenceConfig,
                 backend: ModelBackend | None = None, total_ram_bytes: int | None = None,
                 available_ram: Callable[[], int] | None = None) -> None:
        if backend is None:
            from .llama import LlamaBackend  # imports no llama_cpp until a model loads

            backend = LlamaBackend()
        self._config = config
        self._slots: dict[str, ModelSlot] = {}
        total = total_ram_bytes if total_ram_bytes is not None else psutil.virtual_memory().total
        self._budget = config.cache_size_bytes(total)
        self._available_ram = available_ram or (lambda: int(psutil.virtual_memory().available))
        self._reserved = 0
        self._retiring: set[LoadedModel] = set()
        self._nursery: trio.Nursery | None = None
        self._idle_changed = trio.Event()  # wakes the idle-unload task
        self._closed = False
        self._loader = ModelLoader(config, backend, self)
        for spec in specs:
            self.add(spec)

    # -- what we have ------------------------------------------------------------------

    @property
    def config(self) -> InferenceConfig:
        return self._config

    @property
    def budget_bytes(self) -> int:
        """The model cache budget (cache_size_gb, or 75% of RAM)."""
        return self._budget

    @property
    def reserved_bytes(self) -> int:
        """Estimated memory held by loaded (and loading) models."""
        return self._reserved

    @property
    def default_model_id(self) -> str | None:
        """``default_model`` when configured, else the first model; None with no models."""
        if self._config.default_model is not None:
            return self._config.default_model
        return next(iter(self._slots), None)

    def add(self, spec: ModelSpec) -> None:
        """Make ``spec`` loadable (not loaded yet).

        Raises:
            ValueError: a model with this id exists.
        """
        if spec.id in self._slots:
            raise ValueError(f"model {spec.id!r} is already registered")
        cfg = self._config
        slot = self._slots[spec.id] = ModelSlot(
            spec=spec, limiter=SlotLimiter(cfg.max_concurrent, peer_limit=cfg.peer_slots))
        problem = startup_problem(spec)  # reads headers only: cheap even for big files
        if problem is not None:
            logger.warning("model %s is not served (not advertised to the mesh): %s",
                           spec.id, problem)
            slot.error = problem
            slot.reject()

    def spec(self, model_id: str) -> ModelSpec:
        return self._slot(model_id).spec

    def list(self) -> builtins.list[ModelStatus]:
        """Every model's status, in registration order."""
        return [self._status(slot) for slot in self._slots.values()]

    def status(self, model_id: str) -> ModelStatus:
        """Raises ModelNotFound."""
        return self._status(self._slot(model_id))

    def _slot(self, model_id: str) -> ModelSlot:
        try:
            return self._slots[model_id]
        except KeyError:
            raise ModelNotFound(model_id) from None

    def _status(self, slot: ModelSlot) -> ModelStatus:
        spec = slot.spec
        loaded = slot.loaded
        if loaded is not None:
            memory = loaded.memory_bytes
        elif slot.estimate_bytes is not None:
            memory = slot.estimate_bytes
        else:
            size = spec.size_bytes or 0
            memory = estimate_memory_bytes(size, spec.context_size) if size else 0
        return ModelStatus(
            id=spec.id, state=slot.state, type=spec.type, memory_bytes=memory,
            active=slot.active, queued=slot.pending - slot.active, requests=slot.uses,
            tokens_generated=slot.tokens_generated, tokens_per_second=slot.tokens_per_second,
            ttft_ms=slot.ttft_ms, load_seconds=slot.load_seconds, error=slot.error,
            path=loaded.path if loaded else slot.path or spec.path,
            quant=loaded.quant if loaded else slot.quant, chat_format=spec.chat_format,
            context_size=spec.context_size, tags=spec.tags, file_bytes=spec.size_bytes,
            advertised=slot.advertised)

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self, model_id: str) -> ModelStatus:
        """Load the model (or wait for the load in flight); return its status.

        Raises:
            ModelNotFound, ModelLoadError, InferenceCancelled (registry closing).

        Cancellation: only this caller stops waiting; the load itself carries on.
        """
        slot = self._slot(model_id)
        await self.ensure_loaded(slot)
        return self._status(slot)

    async def unload(self, model_id: str) -> None:
        """Unload the model and free its memory.

        Requests already generating finish first; queued ones will load it again. A load
        in flight is waited for, then its result unloaded.

        Cancellation: once detached (state "available"), the model is freed whether or
        not the caller keeps waiting.
        """
        slot = self._slot(model_id)
        while slot.job is not None:  # let a load in flight finish, then unload its result
            await slot.job.done.wait()
        loaded = slot.loaded
        if loaded is None:
            return
        self._retire(slot)
        await loaded.freed.wait()

    def keep_alive(self, model_id: str, seconds: float | None) -> None:
        """Unload the model once it has been idle ``seconds`` (0: when its requests are
        done); None or math.inf: never (the default). Applies from now on, to the loaded
        model and to later loads.

        Raises:
            ModelNotFound; ValueError: ``seconds`` is negative or NaN.
        """
        slot = self._slot(model_id)
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"keep_alive: must be >= 0 seconds, got {seconds!r}")
        slot.keep_alive_s = None if seconds == math.inf else seconds
        self._idle_changed.set()

    def expires_at(self, model_id: str) -> float | None:
        """When (trio clock) the loaded model will be unloaded for being idle; None if it
        is not loaded or has no idle time. A model in use expires its idle time from now."""
        slot = self._slot(model_id)
        if slot.loaded is None or slot.keep_alive_s is None:
            return None
        if slot.pending or slot.job is not None:
            return trio.current_time() + slot.keep_alive_s
        return slot.last_used + slot.keep_alive_s

    def released(self, slot: ModelSlot) -> None:
        """An admission left the queue (``ModelSource``): its idle clock may start."""
        self._idle_changed.set()

    async def _unload_idle(self) -> None:
        """Forever: unload the models whose idle time is up, sleeping until the next."""
        while True:
            self._idle_changed = trio.Event()
            now = trio.current_time()
            soonest = math.inf
            for slot in self._slots.values():
                if slot.pending or slot.job is not None:
                    continue
                at = self.expires_at(slot.spec.id)
                if at is None:
                    continue
                if at <= now:
                    logger.info("unloading model %s: idle for its keep_alive (%g s)",
                                slot.spec.id, slot.keep_alive_s)
                    self._retire(slot)
                else:
                    soonest = min(soonest, at)
            with trio.move_on_at(soonest):
                await self._idle_changed.wait()

    async def warmup(self, model_id: str, tokens: int = 16) -> ModelStatus:
        """Load if needed, then generate ``tokens`` greedily to measure tokens/s.

        Raises:
            ModelNotFound, ModelBusy, ModelLoadError, InvalidInferenceRequest (an
            embedding model).
        """
        if tokens < 1:
            raise ValueError("tokens: must be >= 1")
        with self.admit(model_id) as admission:
            if admission.spec.type != "llm":
                raise InvalidInferenceRequest(model_id, "embedding models have no warmup")
            async with admission.instance() as inst:
                bench = await trio.to_thread.run_sync(inst.benchmark, tokens)
            record_benchmark(admission.slot, bench)
        return self.status(model_id)

    async def aclose(self) -> None:
        """Refuse new requests and free every model (waits up to CLOSE_GRACE_S for
        running requests). Idempotent."""
        self._closed = True
        for slot in self._slots.values():
            if slot.loaded is not None:
                self._retire(slot)
        with trio.move_on_after(CLOSE_GRACE_S, shield=True) as scope:
            for loaded in builtins.list(self._retiring):
                await loaded.freed.wait()
        if scope.cancelled_caught:
            logger.error("gave up waiting for %d model(s) in use; not freeing them",
                         len(self._retiring))

    # -- admission (used by the engine) ------------------------------------------------

    def admit(self, model_id: str, *, origin: Origin = "local") -> Admission:
        """Take a place in the model's queue, or fail at once.

        ``origin`` "peer" is a request forwarded by a peer: it counts every request
        admitted against ``max_concurrent + max_queue``; a "local" one (our own router)
        counts only the local ones, so it can always queue behind peers.

        Raises:
            ModelNotFound, ModelBusy (queue full), InferenceCancelled (registry closed).
        """
        slot = self._slot(model_id)
        if self._closed:
            raise InferenceCancelled(model_id, "the inference engine is shutting down")
        cfg = self._config
        ahead = slot.pending_local if origin == "local" else slot.pending
        if ahead >= cfg.max_concurrent + cfg.max_queue:
            per_request = slot.request_s if slot.request_s is not None else DEFAULT_REQUEST_S
            waves = (ahead - cfg.max_concurrent) // cfg.max_concurrent + 1
            raise ModelBusy(model_id, retry_after_s=round(max(0.5, per_request * waves), 1))
        slot.pending += 1
        if origin == "local":
            slot.pending_local += 1
        return Admission(self, self._loader, slot, origin=origin)

    # -- loading -----------------------------------------------------------------------

    async def ensure_loaded(self, slot: ModelSlot) -> LoadedModel:
        """Load the slot's model or wait for the load in flight (for ``Admission``).

        Raises ModelLoadError, InferenceCancelled (registry closing)."""
        while True:
            if self._closed:
                raise InferenceCancelled(slot.spec.id, "the inference engine is shutting down")
            if slot.loaded is not None:
                return slot.loaded
            job = slot.job
            if job is None:
                job = self._start_load(slot)
            await job.done.wait()
            if job.error is not None:
                raise ModelLoadError(slot.spec.id, job.error.message)
            # loaded, or loaded and already evicted again: look again

    def _start_load(self, slot: ModelSlot) -> LoadJob:
        if self._nursery is None:
            raise RuntimeError("ModelRegistry must be used inside open_registry()")
        job = LoadJob()
        slot.job = job
        self._nursery.start_soon(self._load_task, slot, job, name=f"load {slot.spec.id}")
        return job

    async def _load_task(self, slot: ModelSlot, job: LoadJob) -> None:
        try:
            result = await self._loader.load(slot)
            if isinstance(result, ModelLoadError):
                logger.error("cannot load model %s: %s", slot.spec.id, result.message)
                job.error = result
                slot.error = result.message
            else:
                slot.loaded = result
                slot.error = None
                slot.rejected = None
                if self._closed:
                    self._retire(slot)
        finally:
            slot.job = None
            job.done.set()
            self._idle_changed.set()

    # -- memory (the loader's Reservations) --------------------------------------------

    def _idle_entries(self, exclude: ModelSlot) -> builtins.list[tuple[ModelSlot, CacheEntry]]:
        out = []
        for slot in self._slots.values():
            loaded = slot.loaded
            if slot is exclude or loaded is None or slot.pending or slot.job is not None:
                continue
            out.append((slot, CacheEntry(model_id=slot.spec.id, memory_bytes=loaded.memory_bytes,
                                         loaded_at=loaded.loaded_at, last_used=slot.last_used,
                                         uses=slot.uses)))
        return out

    def fit_limit(self, slot: ModelSlot) -> int:
        """Bytes a variant of ``slot``'s model may need: free RAM plus what evicting the
        idle models would free, within the cache budget."""
        evictable = sum(entry.memory_bytes for _, entry in self._idle_entries(slot))
        return min(self._budget, self._available_ram() + evictable)

    def reserve(self, slot: ModelSlot, need: int) -> builtins.list[LoadedModel]:
        """Reserve ``need`` bytes for ``slot``, retiring idle models as the policy says.

        Returns the models being freed to make room (wait for their ``freed``).
        """
        model_id = slot.spec.id
        if need > self._budget:
            raise ModelLoadError(model_id, f"needs ~{gib(need)}, more than the whole model "
                                 f"cache budget of {gib(self._budget)} (cache_size_gb)")
        short = self._reserved + need - self._budget
        idle = self._idle_entries(slot)
        chosen = pick_victims([entry for _, entry in idle], need_bytes=short,
                              policy=self._config.eviction_policy)
        if chosen is None:
            raise ModelLoadError(model_id, f"needs ~{gib(need)} but only "
                                 f"{gib(max(0, self._budget - self._reserved))} of the model "
                                 "cache is free and the other models are busy")
        by_id = {s.spec.id: s for s, _ in idle}
        victims = []
        for entry in chosen:
            victim = by_id[entry.model_id]
            logger.info("evicting model %s (%s policy) to make room for %s", entry.model_id,
                        self._config.eviction_policy, model_id)
            loaded = victim.loaded
            assert loaded is not None
            victims.append(loaded)
            self._retire(victim)
        self._reserved += need
        return victims

    def unreserve(self, need: int) -> None:
        """Give back a reservation whose load did not happen."""
        self._reserved -= need

    def _retire(self, slot: ModelSlot) -> None:
        """Detach the slot's model now; free it once its last request is done."""
        loaded = slot.loaded
        if loaded is None or self._nursery is None:
            return
        slot.loaded = None
        loaded.retired = True
        self._retiring.add(loaded)
        if loaded.busy == 0:
            loaded.drained.set()
        self._nursery.start_soon(self._free_when_drained, slot.spec.id, loaded,
                                 name=f"free {slot.spec.id}")

    async def _free_when_drained(self, model_id: str, loaded: LoadedModel) -> None:
        # Shielded but bounded: at shutdown this task starts inside an already-cancelled
        # scope, and an unshielded wait would never free the model (aclose would hang).
        with trio.move_on_after(CLOSE_GRACE_S, shield=True) as scope:
            await loaded.drained.wait()
        if scope.cancelled_caught:
            logger.error("model %s still busy after %s s; not freeing it", model_id,
                         CLOSE_GRACE_S)
            return
        with trio.CancelScope(shield=True):  # a context is freed in milliseconds
            await trio.to_thread.run_sync(_close_all, loaded.instances())
        self._reserved -= loaded.memory_bytes
        self._retiring.discard(loaded)
        loaded.freed.set()
        logger.info("unloaded model %s", model_id)


def _close_all(instances: Sequence[ModelInstance]) -> None:
    for instance in instances:
        instance.close()


@asynccontextmanager
async def open_registry(specs: Sequence[ModelSpec], *, config: InferenceConfig,
                        backend: ModelBackend | None = None,
                        total_ram_bytes: int | None = None,
                        available_ram: Callable[[], int] | None = None,
                        ) -> AsyncIterator[ModelRegistry]:
    """A running registry; models with ``preload`` (or listed in ``config.preload``) start
    loading in the background. Everything is freed when the block exits.

    Raises:
        ConfigError: ``config.preload`` or ``config.default_model`` names a model that is
            not in ``specs``.
    """
    registry = ModelRegistry(specs, config=config, backend=backend,
                             total_ram_bytes=total_ram_bytes, available_ram=available_ram)
    if config.default_model is not None and config.default_model not in registry._slots:
        raise ConfigError("inference.default_model", f"unknown model {config.default_model!r}")
    preload = [s.id for s in specs if s.preload]
    for model_id in config.preload:
        if model_id not in registry._slots:
            raise ConfigError("inference.preload", f"unknown model {model_id!r}")
        if model_id not in preload:
            preload.append(model_id)
    try:
        async with trio.open_nursery() as nursery:
            registry._nursery = nursery
            nursery.start_soon(registry._unload_idle, name="unload idle models")
            for model_id in preload:
                registry._start_load(registry._slots[model_id])
            try:
                yield registry
            finally:
                await registry.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        reraise_unwrapped(group)
