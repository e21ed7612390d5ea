"""Model specs (what the registry may load) and the models.yaml loader that produces them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

from ..config.inference import Parallel, parse_parallel
from ..errors import ConfigError
from ..wire.blob import parse_digest
from ..wire.nodeinfo import MAX_REPLICAS
from .catalog import DEFAULT_MODEL_ID, ModelEntry
from .memory import normalize_quant

ModelType = Literal["llm", "embedding"]
MODEL_TYPES: Final[tuple[str, ...]] = get_args(ModelType)
DEFAULT_CONTEXT_SIZE: Final = 2048
_MODEL_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One model the registry can load. Validated on construction (ValueError).

    Exactly one source: ``path`` (a GGUF file), ``variants`` (quantisation name -> GGUF
    file, the best that fits is picked at load time) or ``bundled`` (the Gemma 3 270M
    package, assembled on first load). ``path`` plus ``variants`` is also allowed: then
    ``path`` is just one more candidate, ranked by the quantisation in its name.
    """

    id: str
    path: Path | None = None
    bundled: bool = False
    type: ModelType = "llm"
    chat_format: str | None = None  # llama-cpp-python name; None = the GGUF's own template
    context_size: int = DEFAULT_CONTEXT_SIZE
    gpu_layers: int = 0  # -1 = all
    preload: bool = False
    tags: tuple[str, ...] = ()
    variants: tuple[tuple[str, Path], ...] = ()  # (canonical quant name, path), as given
    size_bytes: int | None = None  # known file size (bundled: sum of its chunks)
    replicas: int = 0  # copies the mesh keeps (protocols/replication.md); 0 = no target
    digest: str | None = None  # sha256:<hex> of the file when known (a pulled model's)
    parallel: Parallel | None = None  # batched sequences (InferenceConfig.parallel); None = it

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _MODEL_ID.fullmatch(self.id):
            raise ValueError(f"id: {self.id!r} is not a model id (letters, digits, ._:/+-)")
        sources = (self.path is not None) + bool(self.variants) + self.bundled
        if sources == 0:
            raise ValueError(f"model {self.id}: needs a path, variants or bundled")
        if self.bundled and sources > 1:
            raise ValueError(f"model {self.id}: bundled takes no path or variants")
        if self.type not in MODEL_TYPES:
            raise ValueError(f"type: {self.type!r} is not one of " + ", ".join(MODEL_TYPES))
        if isinstance(self.context_size, bool) or not isinstance(self.context_size, int) \
                or self.context_size < 16:
            raise ValueError(f"context_size: must be a whole number >= 16, "
                             f"got {self.context_size!r}")
        if isinstance(self.gpu_layers, bool) or not isinstance(self.gpu_layers, int) \
                or self.gpu_layers < -1:
            raise ValueError(f"gpu_layers: must be a whole number >= -1, got {self.gpu_layers!r}")
        if self.parallel is not None:
            try:
                object.__setattr__(self, "parallel", parse_parallel("parallel", self.parallel))
            except ConfigError as exc:
                raise ValueError(f"parallel: {exc.message}") from exc
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) \
                or not 0 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas: must be a whole number 0-{MAX_REPLICAS}, "
                             f"got {self.replicas!r}")
        if self.digest is not None:
            object.__setattr__(self, "digest", parse_digest(self.digest))
        for quant, _ in self.variants:
            if normalize_quant(quant) != quant:
                raise ValueError(f"variants: {quant!r} is not a canonical quantisation name")

    def candidates(self) -> list[tuple[str | None, Path]]:
        """Files this spec may load: (quantisation or None, path); empty when bundled."""
        out: list[tuple[str | None, Path]] = [(q, p) for q, p in self.variants]
        if self.path is not None:
            out.append((quant_from_filename(self.path.name), self.path))
        return out


def quant_from_filename(name: str) -> str | None:
    """The quantisation named in a GGUF file name (``llama-3-8b.Q4_K_M.gguf`` -> Q4_K_M)."""
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    for part in reversed(re.split(r"[.\-]", stem)):
        quant = normalize_quant(part)
        if quant is not None:
            return quant
    # "model-q4_k_m": the separator before the quantisation is also "_" sometimes.
    match = re.search(r"(?i)(i?q\d(?:_[a-z0-9]+)*|bf16|f16|f32)$", stem)
    return normalize_quant(match.group(1)) if match else None


def spec_from_entry(entry: ModelEntry, *, context_size: int = DEFAULT_CONTEXT_SIZE,
                    gpu_layers: int = 0, preload: bool = False) -> ModelSpec:
    """A spec for a catalog entry (the bundled default or a ``--model`` file)."""
    if entry.source == "bundled":
        return ModelSpec(id=entry.id, bundled=True, chat_format=entry.chat_format or "gemma",
                         context_size=context_size, gpu_layers=gpu_layers, preload=preload,
                         size_bytes=entry.size_bytes)
    return ModelSpec(id=entry.id, path=entry.path, chat_format=entry.chat_format,
                     context_size=context_size, gpu_layers=gpu_layers, preload=preload,
                     size_bytes=entry.size_bytes)


def bundled_spec(*, model_id: str = DEFAULT_MODEL_ID, context_size: int = DEFAULT_CONTEXT_SIZE,
                 preload: bool = False) -> ModelSpec:
    """The bundled Gemma 3 270M model (no chat template in the GGUF: chat_format gemma)."""
    return ModelSpec(id=model_id, bundled=True, chat_format="gemma", context_size=context_size,
                     preload=preload, tags=("bundled",))


def node_specs(*, catalog: Sequence[ModelEntry], models_yaml: Path | None = None,
               models_dir: Path | None = None, context_size: int = DEFAULT_CONTEXT_SIZE,
               gpu_layers: int = 0) -> list[ModelSpec]:
    """Every model a node serves: its catalog (bundled default, ``--model`` files), then
    the models.yaml entries. An entry in models.yaml replaces a catalog model with the
    same id (the file says more about it: tags, context size, preload...).

    Raises:
        ConfigError: from ``load_models_yaml``.
    """
    specs = {e.id: spec_from_entry(e, context_size=context_size, gpu_layers=gpu_layers)
             for e in catalog}
    if models_yaml is not None:
        for spec in load_models_yaml(models_yaml, models_dir=models_dir,
                                     defaults={"context_size": context_size,
                                               "gpu_layers": gpu_layers}):
            specs.pop(spec.id, None)
            specs[spec.id] = spec
    return list(specs.values())


# --------------------------------------------------------------------------- models.yaml

_TOP_KEYS: Final = ("defaults", "available")
_DEFAULT_KEYS: Final = ("gpu_layers", "context_size")
_ENTRY_KEYS: Final = ("id", "path", "bundled", "type", "chat_format", "context_size",
                      "gpu_layers", "preload", "tags", "variants", "replicas", "parallel")


def load_models_yaml(path: Path, *, models_dir: Path | None = None,
                     defaults: Mapping[str, int] | None = None) -> list[ModelSpec]:
    """Read a models.yaml file (format: configs/models.example.yaml).

    Relative model paths resolve against ``models_dir`` when given, else against the
    YAML file's directory. Files are not opened here: a missing file is reported when
    the model is loaded, so one bad entry does not stop the others.

    Args:
        defaults: fallback ``gpu_layers`` / ``context_size`` (the node's InferenceConfig),
            overridden by the file's ``defaults`` block, overridden per entry.

    Raises:
        ConfigError: the file is unreadable, not YAML, has an unknown key or a value of the
            wrong type; ``key`` locates it, e.g. ``available[2].contex_size``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("models_config_path", f"{path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("models_config_path", f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_models_config(data, base_dir=models_dir or path.parent, defaults=defaults)
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.message} (in {path})") from None


def parse_models_config(data: object, *, base_dir: Path,
                        defaults: Mapping[str, int] | None = None) -> list[ModelSpec]:
    """Validate the parsed YAML document; see ``load_models_yaml``."""
    if data is None:
        return []
    top = _mapping("models.yaml", data)
    _check_keys("", top, _TOP_KEYS)
    base: dict[str, Any] = {"gpu_layers": 0, "context_size": DEFAULT_CONTEXT_SIZE}
    base.update(defaults or {})
    raw_defaults = top.get("defaults")
    if raw_defaults is not None:
        block = _mapping("defaults", raw_defaults)
        _check_keys("defaults.", block, _DEFAULT_KEYS)
        if "gpu_layers" in block:
            base["gpu_layers"] = _int("defaults.gpu_layers", block["gpu_layers"], -1)
        if "context_size" in block:
            base["context_size"] = _int("defaults.context_size", block["context_size"], 16)
    available = top.get("available")
    if available is None:
        return []
    if not isinstance(available, list):
        raise ConfigError("available", f"expected a list of models, got {_kind(available)}")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(available):
        spec = _entry(f"available[{i}]", raw, base_dir=base_dir, base=base)
        if spec.id in seen:
            raise ConfigError(f"available[{i}].id", f"duplicate model id {spec.id!r}")
        seen.add(spec.id)
        specs.append(spec)
    return specs


def _entry(where: str, raw: object, *, base_dir: Path, base: Mapping[str, Any]) -> ModelSpec:
    entry = _mapping(where, raw)
    _check_keys(f"{where}.", entry, _ENTRY_KEYS)
    if "id" not in entry:
        raise ConfigError(f"{where}.id", "missing (every model needs an id)")
    model_id = _str(f"{where}.id", entry["id"])
    if not _MODEL_ID.fullmatch(model_id):
        raise ConfigError(f"{where}.id", f"{model_id!r} is not a model id "
                          "(letters, digits, ._:/+- ; at most 128)")
    path = None
    if entry.get("path") is not None:
        path = _resolve(base_dir, _str(f"{where}.path", entry["path"]))
    bundled = _bool(f"{where}.bundled", entry.get("bundled", False))
    variants: list[tuple[str, Path]] = []
    raw_variants = entry.get("variants")
    if raw_variants is not None:
        for quant, file in _mapping(f"{where}.variants", raw_variants).items():
            key = f"{where}.variants.{quant}"
            canonical = normalize_quant(str(quant))
            if canonical is None:
                raise ConfigError(key, "unknown quantisation (known: Q8_0, Q6_K, Q5_K_M, "
                                  "Q5_K_S, Q4_K_M, Q4_K_S, Q4_0, Q3_K_M, IQ3_M, Q2_K, IQ2_M, ...)")
            if any(q == canonical for q, _ in variants):
                raise ConfigError(key, f"{canonical} is listed twice")
            variants.append((canonical, _resolve(base_dir, _str(key, file))))
    sources = (path is not None) + bool(variants) + bundled
    if sources == 0:
        raise ConfigError(f"{where}.path", "missing (give path, variants or bundled: true)")
    if bundled and sources > 1:
        raise ConfigError(f"{where}.bundled", "a bundled model takes no path or variants")
    model_type = _str(f"{where}.type", entry.get("type", "llm"))
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{where}.type", f"{model_type!r} is not one of "
                          + ", ".join(MODEL_TYPES))
    chat_format = entry.get("chat_format")
    if chat_format is not None:
        chat_format = _str(f"{where}.chat_format", chat_format)
    elif bundled:
        chat_format = "gemma"
    tags = entry.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise ConfigError(f"{where}.tags", f"expected a list of strings, got {tags!r}")
    return ModelSpec(
        id=model_id, path=path, bundled=bundled,
        type=model_type,  # type: ignore[arg-type]  # checked against MODEL_TYPES above
        chat_format=chat_format,
        context_size=_int(f"{where}.context_size", entry.get("context_size",
                                                             base["context_size"]), 16),
        gpu_layers=_int(f"{where}.gpu_layers", entry.get("gpu_layers", base["gpu_layers"]), -1),
        preload=_bool(f"{where}.preload", entry.get("preload", False)),
        tags=tuple(tags), variants=tuple(variants),
        replicas=_int(f"{where}.replicas", entry.get("replicas", 0), 0, MAX_REPLICAS),
        parallel=None if entry.get("parallel") is None
        else parse_parallel(f"{where}.parallel", entry["parallel"]),
    )


def _resolve(base_dir: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base_dir / p


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected a mapping, got {_kind(value)}")
    return value


def _check_keys(prefix: str, data: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", "unknown key; expected one of " + ", ".join(known))


def _str(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _int(where: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(where, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(where, f"must be <= {maximum}, got {value}")
    return value


def _bool(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {value!r}")
    return value
