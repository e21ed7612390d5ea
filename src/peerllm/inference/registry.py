"""The model registry: which models exist, which are loaded, their queues and memory budget.

Create it with ``open_registry``: loads, preloads and frees run as tasks in the
registry's nursery, so a load shared by several waiting requests survives any one of
them going away, and leaving the ``async with`` frees every model.

Per model: a ``CapacityLimiter(max_concurrent)`` (one llama context per running
request) and at most ``max_queue`` more requests waiting for it; past that, ModelBusy.
Memory: each load reserves an estimate (memory.py) against the cache budget, evicting
idle models by the configured policy when it would not fit.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
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
from ._concurrency import reraise_unwrapped, stop_check
from .backend import Benchmark, ModelBackend, ModelInstance, OpenOptions
from .catalog import assemble_bundled
from .memory import CacheEntry, choose_variant, estimate_memory_bytes, pick_victims
from .slots import LoadedModel, LoadJob, ModelSlot, check_gguf, ema, gib
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
        self._backend = backend
        self._slots: dict[str, ModelSlot] = {}
        total = total_ram_bytes if total_ram_bytes is not None else psutil.virtual_memory().total
        self._budget = config.cache_size_bytes(total)
        self._available_ram = available_ram or (lambda: int(psutil.virtual_memory().available))
        self._reserved = 0
        self._retiring: set[LoadedModel] = set()
        self._nursery: trio.Nursery | None = None
        self._closed = False
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
        self._slots[spec.id] = ModelSlot(spec=spec,
                                     limiter=trio.CapacityLimiter(self._config.max_concurrent))

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
            context_size=spec.context_size, tags=spec.tags)

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self, model_id: str) -> ModelStatus:
        """Load the model (or wait for the load in flight); return its status.

        Raises:
            ModelNotFound, ModelLoadError, InferenceCancelled (registry closing).

        Cancellation: only this caller stops waiting; the load itself carries on.
        """
        slot = self._slot(model_id)
        await self._ensure_loaded(slot)
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
            self._record_benchmark(admission.slot, bench)
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

    def admit(self, model_id: str) -> Admission:
        """Take a place in the model's queue, or fail at once.

        Raises:
            ModelNotFound, ModelBusy (queue full), InferenceCancelled (registry closed).
        """
        slot = self._slot(model_id)
        if self._closed:
            raise InferenceCancelled(model_id, "the inference engine is shutting down")
        cfg = self._config
        if slot.pending >= cfg.max_concurrent + cfg.max_queue:
            per_request = slot.request_s if slot.request_s is not None else DEFAULT_REQUEST_S
            waves = (slot.pending - cfg.max_concurrent) // cfg.max_concurrent + 1
            raise ModelBusy(model_id, retry_after_s=round(max(0.5, per_request * waves), 1))
        slot.pending += 1
        return Admission(self, slot)

    # -- loading -----------------------------------------------------------------------

    async def _ensure_loaded(self, slot: ModelSlot) -> LoadedModel:
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
            result = await self._try_load(slot)
            if isinstance(result, ModelLoadError):
                logger.error("cannot load model %s: %s", slot.spec.id, result.message)
                job.error = result
                slot.error = result.message
            else:
                slot.loaded = result
                slot.error = None
                if self._closed:
                    self._retire(slot)
        finally:
            slot.job = None
            job.done.set()

    async def _try_load(self, slot: ModelSlot) -> LoadedModel | ModelLoadError:
        model_id = slot.spec.id
        timeout = self._config.load_timeout_s
        error = ModelLoadError(model_id, "load failed")
        scope = trio.move_on_after(timeout)
        try:
            with scope:
                return await self._load(slot)
        except ModelLoadError as exc:
            error = exc
        except Exception as exc:  # a bug or an unexpected backend error: keep serving others
            logger.exception("loading model %s failed", model_id)
            error = ModelLoadError(model_id, f"{type(exc).__name__}: {exc}")
        if scope.cancel_called:  # the deadline, or the backend saw the stop and gave up
            error = ModelLoadError(model_id, f"load timed out after {timeout:g}s "
                                   "(load_timeout_s)")
        return error

    async def _load(self, slot: ModelSlot) -> LoadedModel:
        spec = slot.spec
        started = trio.current_time()
        path, quant, size = await self._pick_file(slot)
        slot.path, slot.quant = path, quant
        need = estimate_memory_bytes(size, spec.context_size, contexts=self._config.max_concurrent)
        slot.estimate_bytes = need
        victims = self._reserve(slot, need)
        try:
            for victim in victims:
                await victim.freed.wait()
            embedding = spec.type == "embedding"
            instance, bench = await trio.to_thread.run_sync(
                self._open_sync, path, self._options(spec, embedding=embedding))
        except BaseException:
            self._reserved -= need
            raise
        # No checkpoint from here on: a cancellation arriving now must not lose `instance`.
        now = trio.current_time()
        loaded = LoadedModel(path=path, quant=quant, memory_bytes=need, loaded_at=now,
                         load_seconds=now - started, idle={embedding: [instance]},
                         created={embedding: 1, not embedding: 0})
        slot.load_seconds = loaded.load_seconds
        slot.last_used = now
        if bench is not None:
            self._record_benchmark(slot, bench)
        logger.info("loaded model %s from %s in %.1fs (~%s)%s", spec.id, path,
                    loaded.load_seconds, gib(need),
                    f", {bench.tokens_per_second:.1f} tokens/s"
                    if bench and bench.tokens_per_second else "")
        return loaded

    def _options(self, spec: ModelSpec, *, embedding: bool) -> OpenOptions:
        cfg = self._config
        return OpenOptions(model_id=spec.id, context_size=spec.context_size,
                           gpu_layers=spec.gpu_layers, n_threads=cfg.n_threads,
                           use_extra_bufts=cfg.use_extra_bufts, chat_format=spec.chat_format,
                           embedding=embedding, mean_pooling=embedding and spec.type == "llm")

    def _open_sync(self, path: Path, options: OpenOptions) -> tuple[ModelInstance,
                                                                   Benchmark | None]:
        """Worker thread: open the file, then self-benchmark (generators only)."""
        instance = self._backend.open(path, options, should_stop=stop_check(threading.Event()))
        if options.embedding or self._config.warmup_tokens == 0:
            return instance, None
        try:
            return instance, instance.benchmark(self._config.warmup_tokens)
        except BaseException:
            instance.close()
            raise

    async def _pick_file(self, slot: ModelSlot) -> tuple[Path, str | None, int]:
        """The file to load: the bundled model, the only candidate, or the best variant
        that fits in memory."""
        spec = slot.spec
        if spec.bundled:
            path = await trio.to_thread.run_sync(assemble_bundled)
            size = await trio.to_thread.run_sync(check_gguf, spec.id, path)
            return path, "Q4_K_M", size
        candidates = spec.candidates()
        found: builtins.list[tuple[str | None, Path, int]] = []
        problems: builtins.list[str] = []
        for quant, path in candidates:
            try:
                found.append((quant, path,
                              await trio.to_thread.run_sync(check_gguf, spec.id, path)))
            except ModelLoadError as exc:
                problems.append(exc.message)
        if not found:
            raise ModelLoadError(spec.id, "; ".join(problems))
        for problem in problems:
            logger.warning("model %s: skipping variant: %s", spec.id, problem)
        if len(found) == 1:
            quant, path, size = found[0]
            return path, quant, size
        limit = min(self._budget, self._available_ram() + self._evictable_bytes(slot))
        pick = choose_variant([(q, size) for q, _, size in found],
                              context_size=spec.context_size,
                              contexts=self._config.max_concurrent, limit_bytes=limit)
        if pick is None:
            smallest = min(size for _, _, size in found)
            need = estimate_memory_bytes(smallest, spec.context_size,
                                         contexts=self._config.max_concurrent)
            raise ModelLoadError(spec.id, f"no variant fits: the smallest needs ~{gib(need)}, "
                                 f"{gib(limit)} is available")
        quant, path, size = found[pick]
        logger.info("model %s: picked variant %s (%s)", spec.id, quant, path)
        return path, quant, size

    # -- memory ------------------------------------------------------------------------

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

    def _evictable_bytes(self, exclude: ModelSlot) -> int:
        return sum(entry.memory_bytes for _, entry in self._idle_entries(exclude))

    def _reserve(self, slot: ModelSlot, need: int) -> builtins.list[LoadedModel]:
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

    # -- contexts ----------------------------------------------------------------------

    async def _checkout(self, slot: ModelSlot, loaded: LoadedModel,
                        embedding: bool) -> ModelInstance:
        pool = loaded.idle.setdefault(embedding, [])
        loaded.busy += 1
        if pool:
            return pool.pop()
        # All contexts of this kind are busy (max_concurrent > 1) or none exists yet (the
        # first embedding request on a generative model): open one more.
        loaded.created[embedding] = loaded.created.get(embedding, 0) + 1
        try:
            instance = await trio.to_thread.run_sync(
                lambda: self._backend.open(loaded.path, self._options(slot.spec,
                                                                      embedding=embedding),
                                           should_stop=stop_check(threading.Event())))
        except BaseException:
            loaded.created[embedding] -= 1
            self._checkin(loaded, None, embedding)
            raise
        return instance

    def _checkin(self, loaded: LoadedModel, instance: ModelInstance | None,
                 embedding: bool) -> None:
        if instance is not None:
            loaded.idle.setdefault(embedding, []).append(instance)
        loaded.busy -= 1
        if loaded.retired and loaded.busy == 0:
            loaded.drained.set()

    def _record_benchmark(self, slot: ModelSlot, bench: Benchmark) -> None:
        if bench.tokens_per_second is not None:
            slot.tokens_per_second = bench.tokens_per_second
        slot.ttft_ms = ema(slot.ttft_ms, bench.ttft_s * 1000.0)


class Admission:
    """One request's place in a model's queue. Release it (``with``) when done."""

    def __init__(self, registry: ModelRegistry, slot: ModelSlot) -> None:
        self._registry = registry
        self.slot = slot
        self._released = False

    @property
    def spec(self) -> ModelSpec:
        return self.slot.spec

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.slot.pending -= 1

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @asynccontextmanager
    async def instance(self, *, embedding: bool = False) -> AsyncIterator[ModelInstance]:
        """Wait for a free context (loading the model if needed) and hold it.

        Raises:
            ModelLoadError, InferenceCancelled.

        Cancellation: leaves the queue (or stops waiting for the load) at once.
        """
        registry, slot = self._registry, self.slot
        if slot.spec.type == "embedding" and not embedding:
            raise InvalidInferenceRequest(slot.spec.id, "this is an embedding model; it "
                                          "cannot generate text")
        async with slot.limiter:
            loaded = await registry._ensure_loaded(slot)
            instance = await registry._checkout(slot, loaded, embedding)
            slot.active += 1
            try:
                yield instance
            finally:
                slot.active -= 1
                slot.uses += 1
                slot.last_used = trio.current_time()
                registry._checkin(loaded, instance, embedding)

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
            for model_id in preload:
                registry._start_load(registry._slots[model_id])
            try:
                yield registry
            finally:
                await registry.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        reraise_unwrapped(group)
