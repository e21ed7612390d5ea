"""Per-model bookkeeping for the registry: status snapshots, load jobs, loaded contexts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Protocol

import trio

from ..config import InferenceConfig
from ..config.inference import AUTO_PARALLEL, Parallel
from ..errors import ModelLoadError
from .backend import ModelInstance
from .gguf import gguf_problem
from .memory import estimate_memory_bytes, fitting_slots
from .priority import SlotLimiter
from .specs import ModelSpec, ModelType

ModelState = Literal["available", "loading", "loaded", "failed"]
FileStamp = tuple[str, int | None, int | None]
"""A model file's (path, size, mtime_ns); None, None when it cannot be stat'ed."""

EMA_ALPHA: Final = 0.2  # weight of the newest request in the running averages


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    """A snapshot of one model, for node-info, the API and ``peerllm models``."""

    id: str
    state: ModelState
    type: ModelType
    memory_bytes: int  # estimate: weights + KV cache per context (reserved while loaded)
    active: int  # requests generating now
    queued: int  # requests waiting for a free context (or for the load)
    requests: int  # requests served since start
    tokens_generated: int
    tokens_per_second: float | None  # self-benchmark, then a running average of requests
    ttft_ms: float | None  # running average of time to first token
    load_seconds: float | None
    error: str | None  # why the last load failed
    path: Path | None  # the file loaded (or last tried); None before the first load
    quant: str | None  # the variant picked, when the model has several
    chat_format: str | None
    context_size: int
    tags: tuple[str, ...]
    file_bytes: int | None = None  # the model file's size (bundled: its chunks together)
    # False while the model's file is known bad (invalid header, or llama.cpp refused
    # it): the node does not advertise it until the file changes.
    advertised: bool = True
    digest: str | None = None  # sha256:<hex> of the file served, once known
    replicas: int = 0  # copies the mesh should keep (the spec's)
    # Batch slots of its generating context (1: not batched); for "auto", provisional
    # until a load resolves it (slots.resolve_parallel).
    parallel: int = 1


@dataclass(eq=False)
class LoadedModel:
    """A loaded model: its llama contexts, idle ones pooled per kind (embedding or not)."""

    path: Path
    quant: str | None
    memory_bytes: int
    loaded_at: float
    load_seconds: float
    idle: dict[bool, list[ModelInstance]]
    created: dict[bool, int]
    busy: int = 0
    retired: bool = False  # unloaded or evicted: free once ``busy`` drops to 0
    drained: trio.Event = field(default_factory=trio.Event)
    freed: trio.Event = field(default_factory=trio.Event)

    def instances(self) -> list[ModelInstance]:
        return [inst for pool in self.idle.values() for inst in pool]


@dataclass(eq=False)
class LoadJob:
    done: trio.Event = field(default_factory=trio.Event)
    error: ModelLoadError | None = None


class Cancellable(Protocol):
    """An admitted request the registry can end (the model was deleted under it)."""

    def cancel(self, reason: str) -> None: ...


@dataclass(eq=False)
class ModelSlot:
    """One version of a model: its spec, its loaded contexts, its queue and statistics."""

    spec: ModelSpec
    limiter: SlotLimiter
    # Sequences its generating context decodes together: the number asked for, or for
    # "auto" a provisional bound until a load resolves it (slots.resolve_parallel).
    parallel: int = 1
    loaded: LoadedModel | None = None
    job: LoadJob | None = None  # the load in flight
    error: str | None = None
    path: Path | None = None
    quant: str | None = None
    estimate_bytes: int | None = None
    load_seconds: float | None = None
    pending: int = 0  # admitted: queued + active
    pending_local: int = 0  # of which placed by our own router (origin "local")
    active: int = 0
    uses: int = 0
    last_used: float = 0.0
    keep_alive_s: float | None = None  # idle time before unloading; None: never (Ollama)
    tokens_generated: int = 0
    tokens_per_second: float | None = None
    ttft_ms: float | None = None
    request_s: float | None = None
    rejected: tuple[FileStamp, ...] | None = None  # the files as they were when refused
    digest: str | None = None  # sha256:<hex> of the file (the spec's, or computed later)
    # Replaced or removed: takes no new request, freed once ``pending`` is 0 (versions.py).
    superseded: bool = False
    admissions: set[Cancellable] = field(default_factory=set)  # admitted, not released
    drained: trio.Event = field(default_factory=trio.Event)  # superseded and freed
    # Loaded models of this id's older versions, freed once drained: a load of this
    # version that does not fit waits for them instead of failing.
    predecessors: list[LoadedModel] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.digest is None:
            self.digest = self.spec.digest

    @property
    def advertised(self) -> bool:
        """False while the files that were refused are unchanged (stat only)."""
        return self.rejected is None or file_stamps(self.spec) != self.rejected

    def reject(self) -> None:
        """The model's files are unusable as they are now: stop advertising it."""
        self.rejected = file_stamps(self.spec)

    @property
    def state(self) -> ModelState:
        if self.job is not None:
            return "loading"
        if self.loaded is not None:
            return "loaded"
        return "failed" if self.error is not None else "available"


def status_of(slot: ModelSlot) -> ModelStatus:
    """The slot's status snapshot."""
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
        advertised=slot.advertised, digest=slot.digest, replicas=spec.replicas,
        parallel=slot.parallel)


def requested_parallel(spec: ModelSpec, config: InferenceConfig) -> Parallel:
    """The ``parallel`` asked for the model's generating context (the spec's, else the
    node's). Embedding models are never batched here."""
    if spec.type != "llm":
        return 1
    return spec.parallel if spec.parallel is not None else config.parallel


def provisional_parallel(spec: ModelSpec, config: InferenceConfig, *, max_parallel: int
                         ) -> int:
    """The slots to count before a load resolves them: the number asked for, or for
    "auto" AUTO_PARALLEL within what the backend batches (``max_parallel``)."""
    asked = requested_parallel(spec, config)
    return asked if asked != "auto" else max(1, min(AUTO_PARALLEL, max_parallel))


def resolve_parallel(spec: ModelSpec, config: InferenceConfig, *, max_parallel: int,
                     file_bytes: int, limit_bytes: int) -> int:
    """The slots a load gives the model: the number asked for, or for "auto" the most
    (up to AUTO_PARALLEL and ``max_parallel``) whose KV caches fit ``limit_bytes`` next to
    the weights (memory.fitting_slots), at least 1."""
    asked = requested_parallel(spec, config)
    if asked != "auto":
        return asked
    return fitting_slots(file_bytes, spec.context_size,
                         most=min(AUTO_PARALLEL, max_parallel), limit_bytes=limit_bytes)


def concurrency_of(slot: ModelSlot, config: InferenceConfig) -> int:
    """Requests the model runs at once: its batch slots when batched, else
    ``max_concurrent`` llama contexts. Its KV caches are this many contexts' worth."""
    return slots_for(slot.parallel, config)


def slots_for(parallel: int, config: InferenceConfig) -> int:
    """``concurrency_of`` a model with ``parallel`` batch slots."""
    return parallel if parallel > 1 else config.max_concurrent


def file_stamps(spec: ModelSpec) -> tuple[FileStamp, ...]:
    """What tells a replaced file from the one that was refused (empty when bundled)."""
    out: list[FileStamp] = []
    for _, path in spec.candidates():
        try:
            st = path.stat()
        except OSError:
            out.append((str(path), None, None))
        else:
            out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


def startup_problem(spec: ModelSpec) -> str | None:
    """Why none of ``spec``'s files can be served (None: one looks sound, or bundled)."""
    problems: list[str] = []
    for _, path in spec.candidates():
        problem = gguf_problem(path)
        if problem is None:
            return None
        problems.append(f"{path}: {problem}")
    return "; ".join(problems) or None


def ema(old: float | None, new: float) -> float:
    """An exponential moving average step (the first sample starts it)."""
    return new if old is None else old + EMA_ALPHA * (new - old)


def gib(n: int) -> str:
    """Bytes as GiB for messages."""
    return f"{n / 1024**3:.2f} GiB"


def check_gguf(model_id: str, path: Path) -> int:
    """Worker thread: the file's size, after checking its GGUF header (gguf.py)."""
    problem = gguf_problem(path)
    if problem is None:
        try:
            return path.stat().st_size
        except OSError as exc:  # replaced or removed since the check
            problem = f"cannot read: {exc.strerror}"
    raise ModelLoadError(model_id, f"{path}: {problem}")
