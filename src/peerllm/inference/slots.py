"""Per-model bookkeeping for the registry: status snapshots, load jobs, loaded contexts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import trio

from ..errors import ModelLoadError
from .backend import ModelInstance
from .catalog import GGUF_MAGIC
from .priority import SlotLimiter
from .specs import ModelSpec, ModelType

ModelState = Literal["available", "loading", "loaded", "failed"]

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


@dataclass(eq=False)
class ModelSlot:
    spec: ModelSpec
    limiter: SlotLimiter
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

    @property
    def state(self) -> ModelState:
        if self.job is not None:
            return "loading"
        if self.loaded is not None:
            return "loaded"
        return "failed" if self.error is not None else "available"


def ema(old: float | None, new: float) -> float:
    """An exponential moving average step (the first sample starts it)."""
    return new if old is None else old + EMA_ALPHA * (new - old)


def gib(n: int) -> str:
    """Bytes as GiB for messages."""
    return f"{n / 1024**3:.2f} GiB"


def check_gguf(model_id: str, path: Path) -> int:
    """Worker thread: the file's size, after checking it exists and is GGUF."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
            size = path.stat().st_size
    except FileNotFoundError:
        raise ModelLoadError(model_id, f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelLoadError(model_id, f"{path}: is a directory, not a GGUF file") from None
    except OSError as exc:
        raise ModelLoadError(model_id, f"{path}: cannot read: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(model_id, f"{path}: not a GGUF file (starts with {magic!r})")
    return size
