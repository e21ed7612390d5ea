"""The model registry: which models exist, which are loaded, their queues and memory budget.

Create it with ``open_registry``: loads, preloads and frees run as tasks in the
registry's nursery, so a load shared by several waiting requests survives any one of
them going away, and leaving the ``async with`` frees every model.

Per model: a ``SlotLimiter(max_concurrent)`` (one llama context per running request;
or ``parallel`` sequences of one batched context, slots.concurrency_of; "auto" counts a
provisional number until a load resolves it, loading.py;
our own requests before peers', peers capped at ``peer_slots``) and at most ``max_queue``
more requests waiting for it; past that, ModelBusy. Our own requests are counted on
their own against that bound, so peers filling the queue never make one of ours busy.
A model may be given an idle time (Ollama's ``keep_alive``): one task in the nursery
unloads it once it has been idle that long (0: as soon as its requests are done).
Memory: each load reserves an estimate against the cache budget (books.py). The load
itself (which file, opening it, the benchmark) is loading.py's; a request's hold on a
model is admission.py's.

Versions: ``replace`` swaps a model's spec at once (a new slot takes the id; requests
already admitted finish on the old slot, whose model is freed when they are done) and
``remove`` deletes it. Any model id given to the registry may be pinned to a version,
``id@<digest prefix>`` (versions.py).
"""

from __future__ import annotations

import builtins
import dataclasses
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
from ..wire.blob import parse_digest
from ._concurrency import reraise_unwrapped
from .admission import Admission
from .backend import ModelBackend
from .books import CLOSE_GRACE_S, MemoryBooks
from .loading import ModelLoader, record_benchmark
from .priority import Origin, SlotLimiter
from .slots import (
    LoadedModel,
    LoadJob,
    ModelSlot,
    concurrency_of,
    provisional_parallel,
    slots_for,
    startup_problem,
    status_of,
)
from .slots import ModelState as ModelState
from .slots import ModelStatus as ModelStatus
from .specs import ModelSpec
from .versions import Drains, check_pin, parse_ref

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_S: Final = 2.0  # assumed request duration before any was measured
DELETED: Final = "the model was deleted"  # why remove(cancel=True) ends a request


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
        self._books = MemoryBooks(
            budget=config.cache_size_bytes(total), policy=config.eviction_policy,
            available_ram=available_ram or (lambda: int(psutil.virtual_memory().available)),
            slots=self._slots.values)
        self._drains = Drains()  # replaced and removed versions with requests left
        self._nursery: trio.Nursery | None = None
        self._idle_changed = trio.Event()  # wakes the idle-unload task
        self._closed = False
        self._loader = ModelLoader(config, backend, self._books)
        # The operator's replica target for a model id (`peerllm replicate`, kept by
        # mesh/replica_settings.py), outranking the spec's; open_node sets it.
        self.replica_target: Callable[[str], int | None] = lambda model_id: None
        for spec in specs:
            self.add(spec)

    # -- what we have ------------------------------------------------------------------

    @property
    def config(self) -> InferenceConfig:
        return self._config

    @property
    def budget_bytes(self) -> int:
        """The model cache budget (cache_size_gb, or 75% of RAM)."""
        return self._books.budget

    @property
    def reserved_bytes(self) -> int:
        """Estimated memory held by loaded (and loading) models."""
        return self._books.reserved

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
        self._slots[spec.id] = self._new_slot(spec)

    def _new_slot(self, spec: ModelSpec) -> ModelSlot:
        cfg = self._config
        parallel = provisional_parallel(spec, cfg, max_parallel=self._loader.max_parallel)
        n = slots_for(parallel, cfg)
        slot = ModelSlot(spec=spec, limiter=SlotLimiter(n, peer_limit=cfg.peer_slots_of(n)),
                         parallel=parallel)
        problem = startup_problem(spec)  # reads headers only: cheap even for big files
        if problem is not None:
            logger.warning("model %s is not served (not advertised to the mesh): %s",
                           spec.id, problem)
            slot.error = problem
            slot.reject()
        return slot

    def replace(self, spec: ModelSpec) -> None:
        """Hot swap: serve ``spec`` under its id from now on.

        New requests get the new version at once; requests already admitted (queued or
        generating) finish on the old one, which is freed when the last is done. If the
        old version was loaded (or loading), the new one starts loading now, so the first
        request after the swap need not wait for a cold load; when both do not fit in
        the cache, that load waits for the old version to drain.

        Raises:
            ModelNotFound: no model has this id (``add`` it).
        """
        old = self._slot(spec.id)
        new = self._new_slot(spec)
        new.keep_alive_s = old.keep_alive_s
        new.predecessors = [m for m in (old.loaded, *old.predecessors)
                            if m is not None and not m.freed.is_set()]
        warm = old.loaded is not None or old.job is not None
        self._slots[spec.id] = new
        self._supersede(old)
        logger.info("model %s replaced%s; %d request(s) finish on the old version",
                    spec.id, f" (now {spec.digest})" if spec.digest else "", old.pending)
        if warm and new.rejected is None and not self._closed:
            self._start_load(new)

    async def remove(self, model_id: str, *, cancel: bool = False) -> None:
        """Stop serving the model at once (new requests get ModelNotFound), then wait for
        its requests to finish (``cancel``: end them with InferenceCancelled "the model
        was deleted") and for its memory to be freed. Older versions of it still
        draining after a ``replace`` are treated the same.

        Raises:
            ModelNotFound.

        Cancellation: the model is removed whether or not the caller keeps waiting.
        """
        slot = self._slot(model_id)
        del self._slots[slot.spec.id]
        self._supersede(slot)
        logger.info("model %s removed%s", slot.spec.id,
                    "; cancelling its requests" if cancel else "")
        olds = [slot, *(o for o in self._drains.of(slot.spec.id) if o is not slot)]
        if cancel:
            for old in olds:
                for admission in builtins.list(old.admissions):
                    admission.cancel(DELETED)
        for old in olds:
            await old.drained.wait()

    def set_digest(self, model_id: str, digest: str, *, spec: ModelSpec | None = None
                   ) -> None:
        """Record the sha256 digest of the model's file (``sha256:<hex>``).

        ``spec``: the version the digest was computed for; when the model was replaced
        since, nothing is recorded (the digest is of the old file).

        Raises:
            ModelNotFound; ValueError: ``digest`` is not a sha256 digest.
        """
        slot = self._slot(model_id)
        digest = parse_digest(digest)
        if spec is None or slot.spec is spec:
            slot.digest = digest

    def spec(self, model_id: str) -> ModelSpec:
        return self._slot(model_id).spec

    def list(self) -> builtins.list[ModelStatus]:
        """Every model's status, in registration order."""
        return [self._status(slot) for slot in self._slots.values()]

    def concurrency(self, model_id: str) -> int:
        """Requests ``model_id`` runs at once (its slots: ``max_concurrent`` contexts, or
        ``parallel`` sequences of one batched context).

        Raises:
            ModelNotFound.
        """
        return concurrency_of(self._slot(model_id), self._config)

    def status(self, model_id: str) -> ModelStatus:
        """Raises ModelNotFound."""
        return self._status(self._slot(model_id))

    def _slot(self, model_id: str) -> ModelSlot:
        """The current version of ``model_id`` (``id`` or a pinned ``id@<hex>``)."""
        ref = parse_ref(model_id)
        slot = self._slots.get(ref.model_id)
        if slot is None:
            raise ModelNotFound(model_id)
        return check_pin(ref, slot)

    def _status(self, slot: ModelSlot) -> ModelStatus:
        st = status_of(slot)
        target = self.replica_target(st.id)
        return st if target is None else dataclasses.replace(st, replicas=target)

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
        self._books.retire(slot)
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
        """An admission left the queue (``ModelSource``): its idle clock may start, or
        an old version's last request is done."""
        self._idle_changed.set()
        self._drain_check(slot)

    def _supersede(self, slot: ModelSlot) -> None:
        """``slot`` no longer has the id: keep it until its admitted requests are done."""
        slot.superseded = True
        self._drains.add(slot)
        self._drain_check(slot)

    def _drain_check(self, slot: ModelSlot) -> None:
        """Free a superseded slot's model once nothing is admitted or loading on it."""
        if not slot.superseded or slot.pending or slot.job is not None \
                or slot.drained.is_set():
            return
        self._drains.discard(slot)
        if slot.loaded is None or self._books.nursery is None:
            slot.drained.set()
        else:
            self._books.retire(slot, then=slot.drained)

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
                    self._books.retire(slot)
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
        with self.admit(model_id) as admission, admission.cancellable():
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
        for slot in [*self._slots.values(), *self._drains]:
            if slot.loaded is not None:
                self._books.retire(slot)
        with trio.move_on_after(CLOSE_GRACE_S, shield=True) as scope:
            for loaded in builtins.list(self._books.retiring):
                await loaded.freed.wait()
        if scope.cancelled_caught:
            logger.error("gave up waiting for %d model(s) in use; not freeing them",
                         len(self._books.retiring))

    # -- admission (used by the engine) ------------------------------------------------

    def admit(self, model_id: str, *, origin: Origin = "local") -> Admission:
        """Take a place in the model's queue, or fail at once.

        ``origin`` "peer" is a request forwarded by a peer: it counts every request
        admitted against its slots (``max_concurrent``, or ``parallel`` when batched)
        plus ``max_queue``; a "local" one (our own router)
        counts only the local ones, so it can always queue behind peers.

        Raises:
            ModelNotFound, ModelBusy (queue full), InferenceCancelled (registry closed).
        """
        slot = self._slot(model_id)
        if self._closed:
            raise InferenceCancelled(model_id, "the inference engine is shutting down")
        cfg = self._config
        n = concurrency_of(slot, cfg)
        ahead = slot.pending_local if origin == "local" else slot.pending
        if ahead >= n + cfg.max_queue:
            per_request = slot.request_s if slot.request_s is not None else DEFAULT_REQUEST_S
            waves = (ahead - n) // n + 1
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
                    self._books.retire(slot)
        finally:
            slot.job = None
            job.done.set()
            self._idle_changed.set()
            if slot.superseded:
                current = self._slots.get(slot.spec.id)
                if current is not None and slot.loaded is not None:
                    current.predecessors.append(slot.loaded)
                self._drain_check(slot)


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
            registry._nursery = registry._books.nursery = nursery
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
