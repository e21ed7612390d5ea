"""Loading one model: pick the variant that fits, open it in a worker thread, benchmark it.

``ModelLoader`` does the work of a load for the registry, which keeps the slots, the load
jobs and the memory books: the loader asks it for room through the ``Reservations``
protocol and never sees the other models.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import trio

from ..config import InferenceConfig
from ..errors import ModelLoadError
from ._concurrency import stop_check
from .backend import Benchmark, ModelBackend, ModelInstance, OpenOptions
from .catalog import assemble_bundled
from .memory import choose_variant, estimate_memory_bytes
from .slots import (
    LoadedModel,
    ModelSlot,
    check_gguf,
    concurrency_of,
    ema,
    gib,
    requested_parallel,
    resolve_parallel,
    slots_for,
)

logger = logging.getLogger(__name__)


class Reservations(Protocol):
    """The registry's memory books, as a load needs them."""

    def fit_limit(self, slot: ModelSlot) -> int:
        """Bytes a variant of ``slot``'s model may need: free RAM plus what eviction of
        idle models would free, within the cache budget."""
        ...

    def reserve(self, slot: ModelSlot, need: int) -> list[LoadedModel]:
        """Reserve ``need`` bytes, evicting idle models; return those being freed.

        Raises ModelLoadError when the bytes cannot be found."""
        ...

    def unreserve(self, need: int) -> None:
        """Give back a reservation whose load did not happen."""
        ...


class ModelLoader:
    """Opens models' files with the backend, within the registry's memory books."""

    def __init__(self, config: InferenceConfig, backend: ModelBackend,
                 memory: Reservations) -> None:
        self._config = config
        self._backend = backend
        self._memory = memory

    @property
    def max_parallel(self) -> int:
        """Sequences the backend can batch in one context (1: it cannot batch)."""
        return self._backend.max_parallel

    async def load(self, slot: ModelSlot) -> LoadedModel | ModelLoadError:
        """Load ``slot``'s model within ``load_timeout_s``; a failure is returned, not
        raised, so that the caller's load job can hand it to every waiter."""
        model_id = slot.spec.id
        timeout = self._config.load_timeout_s
        error = ModelLoadError(model_id, "load failed")
        scope = trio.move_on_after(timeout)
        try:
            with scope:
                return await self._load(slot)
        except ModelLoadError as exc:
            error = exc
        except Exception:  # a bug or an unexpected backend error: keep serving others
            logger.exception("loading model %s failed", model_id)
            error = ModelLoadError(model_id, "load failed unexpectedly (the serving node's "
                                   "log has the details)")
        if scope.cancel_called:  # the deadline, or the backend saw the stop and gave up
            slot.rejected = None  # slow is not bad: the file may load next time
            error = ModelLoadError(model_id, f"load timed out after {timeout:g}s "
                                   "(load_timeout_s)")
        return error

    def shares_context(self, slot: ModelSlot, *, embedding: bool) -> bool:
        """True when one (batched) context of this kind serves all of the model's slots."""
        return not embedding and slot.parallel > 1

    async def open_context(self, path: Path, slot: ModelSlot, *,
                           embedding: bool) -> ModelInstance:
        """One more llama context of a loaded model (in a worker thread)."""
        return await trio.to_thread.run_sync(
            self._open_instance, path, self._options(slot, embedding=embedding))

    async def _load(self, slot: ModelSlot) -> LoadedModel:
        spec = slot.spec
        started = trio.current_time()
        path, quant, size = await self._pick_file(slot)
        slot.path, slot.quant = path, quant
        self._resolve_parallel(slot, size)
        need = estimate_memory_bytes(size, spec.context_size,
                                     contexts=concurrency_of(slot, self._config))
        slot.estimate_bytes = need
        victims = self._memory.reserve(slot, need)
        try:
            for victim in victims:
                await victim.freed.wait()
            embedding = spec.type == "embedding"
            instance, bench = await trio.to_thread.run_sync(
                self._open_sync, path, self._options(slot, embedding=embedding))
        except BaseException as exc:
            self._memory.unreserve(need)
            if isinstance(exc, ModelLoadError):  # the backend refused the file itself
                slot.reject()
            raise
        # No checkpoint from here on: a cancellation arriving now must not lose `instance`.
        now = trio.current_time()
        loaded = LoadedModel(path=path, quant=quant, memory_bytes=need, loaded_at=now,
                             load_seconds=now - started, idle={embedding: [instance]},
                             created={embedding: 1, not embedding: 0})
        slot.load_seconds = loaded.load_seconds
        slot.last_used = now
        if bench is not None:
            record_benchmark(slot, bench)
        logger.info("loaded model %s from %s in %.1fs (~%s)%s", spec.id, path,
                    loaded.load_seconds, gib(need),
                    f", {bench.tokens_per_second:.1f} tokens/s"
                    if bench and bench.tokens_per_second else "")
        return loaded

    def _resolve_parallel(self, slot: ModelSlot, file_bytes: int) -> None:
        """Fix the model's slots for this load ("auto": what the memory holds) and make
        the limiter (hence the busy bound and node-info capacity) count them."""
        cfg = self._config
        parallel = resolve_parallel(slot.spec, cfg, max_parallel=self.max_parallel,
                                    file_bytes=file_bytes,
                                    limit_bytes=self._memory.fit_limit(slot))
        if parallel != slot.parallel:
            slot.parallel = parallel
            n = concurrency_of(slot, cfg)
            slot.limiter.resize(n, peer_limit=cfg.peer_slots_of(n))
        if requested_parallel(slot.spec, cfg) == "auto":
            logger.info("model %s: parallel auto -> %d slot(s)", slot.spec.id, parallel)

    def _options(self, slot: ModelSlot, *, embedding: bool) -> OpenOptions:
        cfg = self._config
        spec = slot.spec
        return OpenOptions(model_id=spec.id, context_size=spec.context_size,
                           gpu_layers=spec.gpu_layers, n_threads=cfg.n_threads,
                           use_extra_bufts=cfg.use_extra_bufts, chat_format=spec.chat_format,
                           embedding=embedding, mean_pooling=embedding and spec.type == "llm",
                           parallel=1 if embedding else slot.parallel)

    def _open_instance(self, path: Path, options: OpenOptions) -> ModelInstance:
        """Worker thread: open the file."""
        return self._backend.open(path, options, should_stop=stop_check(threading.Event()))

    def _open_sync(self, path: Path, options: OpenOptions) -> tuple[ModelInstance,
                                                                   Benchmark | None]:
        """Worker thread: open the file, then self-benchmark (generators only)."""
        instance = self._open_instance(path, options)
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
        found: list[tuple[str | None, Path, int]] = []
        problems: list[str] = []
        for quant, path in candidates:
            try:
                found.append((quant, path,
                              await trio.to_thread.run_sync(check_gguf, spec.id, path)))
            except ModelLoadError as exc:
                problems.append(exc.message)
        if not found:
            slot.reject()  # every file is bad: withdrawn until one of them changes
            raise ModelLoadError(spec.id, "; ".join(problems))
        for problem in problems:
            logger.warning("model %s: skipping variant: %s", spec.id, problem)
        if len(found) == 1:
            quant, path, size = found[0]
            return path, quant, size
        limit = self._memory.fit_limit(slot)
        # "auto" slots shrink to what fits, so the variant is picked for the fewest.
        asked = requested_parallel(spec, self._config)
        contexts = slots_for(1 if asked == "auto" else asked, self._config)
        pick = choose_variant([(q, size) for q, _, size in found],
                              context_size=spec.context_size, contexts=contexts,
                              limit_bytes=limit)
        if pick is None:
            smallest = min(size for _, _, size in found)
            need = estimate_memory_bytes(smallest, spec.context_size, contexts=contexts)
            raise ModelLoadError(spec.id, f"no variant fits: the smallest needs ~{gib(need)}, "
                                 f"{gib(limit)} is available")
        quant, path, size = found[pick]
        logger.info("model %s: picked variant %s (%s)", spec.id, quant, path)
        return path, quant, size


def record_benchmark(slot: ModelSlot, bench: Benchmark) -> None:
    """Fold a self-benchmark (at load or warmup) into the model's statistics."""
    if bench.tokens_per_second is not None:
        slot.tokens_per_second = bench.tokens_per_second
    slot.ttft_ms = ema(slot.ttft_ms, bench.ttft_s * 1000.0)
