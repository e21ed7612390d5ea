"""The models store: content-addressed model files and one document per pulled model.

Layout under the models root (``inference.models_dir`` or ``<data_dir>/models``)::

    blobs/sha256-<hex>.gguf                 complete model files, named by their sha256
    blobs/sha256-<hex>.gguf.partial         a download in progress (transfer.partial)
    blobs/sha256-<hex>.gguf.partial.state   its state
    pulled/<model-id>.json                  one StoredModel document per pulled model

A document names its file by its plain name under blobs/ only; one that names anything
else (a path, ``..``, another form) is skipped with a warning, never followed, so a
hand-edited or hostile document cannot make the node serve or delete files elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote

from ..wire.blob import digest_hex, parse_digest
from .digests import sidecar_path

logger = logging.getLogger(__name__)

BLOBS: Final = "blobs"
PULLED: Final = "pulled"
BLOB_SUFFIX: Final = ".gguf"
PARTIAL_SUFFIX: Final = ".partial"
DOC_VERSION: Final = 1
# The form of a model id as inference.specs accepts it; repeated here because transfer
# may not import inference (sibling adapters), and a document is checked on read.
_MODEL_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}")
_BLOB_NAME: Final = re.compile(r"sha256-[0-9a-f]{64}\.gguf")
_URL_KEY: Final = re.compile(r"url-[0-9a-f]{32}")


@dataclass(frozen=True, kw_only=True)
class StoredModel:
    """A pulled model: which blob holds it and how to serve it."""

    id: str
    digest: str
    file: str  # plain name under blobs/
    size: int
    type: str = "llm"
    chat_format: str | None = None
    context_size: int | None = None
    source: str = ""  # "peer:<peer-id>,..." or the URL it came from
    pulled_at: float = 0.0  # unix time
    replicas: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _MODEL_ID.fullmatch(self.id):
            raise ValueError(f"id: {self.id!r} is not a model id (letters, digits, ._:/+-)")
        object.__setattr__(self, "digest", parse_digest(self.digest))
        if not isinstance(self.file, str) or not _BLOB_NAME.fullmatch(self.file):
            raise ValueError(f"file: {self.file!r} is not a blob name (sha256-<hex>.gguf)")
        if self.file != blob_name(self.digest):
            raise ValueError(f"file: {self.file} does not match digest {self.digest}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"size: {self.size!r} is not a byte count")
        if self.type not in ("llm", "embedding"):
            raise ValueError(f"type: {self.type!r} is not llm or embedding")
        if self.context_size is not None and (
                isinstance(self.context_size, bool) or not isinstance(self.context_size, int)
                or self.context_size < 1):
            raise ValueError(f"context_size: {self.context_size!r} is not a positive int")
        if self.chat_format is not None and not isinstance(self.chat_format, str):
            raise ValueError("chat_format: expected a string")
        if not isinstance(self.source, str):
            raise TypeError("source: expected a string")
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) \
                or self.replicas < 0:
            raise ValueError(f"replicas: {self.replicas!r} is not a count")
        if not isinstance(self.pulled_at, (int, float)) or isinstance(self.pulled_at, bool):
            raise TypeError("pulled_at: expected a number")


def is_model_id(text: str) -> bool:
    return isinstance(text, str) and _MODEL_ID.fullmatch(text) is not None


def blob_name(digest: str) -> str:
    """``sha256-<hex>.gguf``: the name of the blob holding the file of ``digest``."""
    return f"sha256-{digest_hex(digest)}{BLOB_SUFFIX}"


def url_key(url: str) -> str:
    """The partial's key for a URL pull whose digest is not known yet."""
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:32]


class ModelStore:
    """The models root: blobs and pulled-model documents (blocking file I/O)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / BLOBS
        self.pulled = root / PULLED

    def blob_path(self, digest: str) -> Path:
        return self.blobs / blob_name(digest)

    def partial_path(self, key: str) -> Path:
        """Where the download of ``key`` (a digest, or ``url_key(url)``) is assembled."""
        if _URL_KEY.fullmatch(key):
            return self.blobs / f"{key}{BLOB_SUFFIX}{PARTIAL_SUFFIX}"
        return self.blobs / f"{blob_name(key)}{PARTIAL_SUFFIX}"

    def list(self) -> list[StoredModel]:
        """Every readable document, by id; corrupt or hostile ones are skipped (logged)."""
        out: list[StoredModel] = []
        try:
            names = sorted(p for p in self.pulled.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return out
        for path in names:
            entry = self._read(path)
            if entry is not None:
                out.append(entry)
        return out

    def get(self, model_id: str) -> StoredModel | None:
        if not _MODEL_ID.fullmatch(model_id):
            return None
        path = self._doc_path(model_id)
        return self._read(path) if path.exists() else None

    def add(self, entry: StoredModel) -> None:
        """Write ``entry``'s document atomically, replacing one with the same id."""
        self.pulled.mkdir(parents=True, exist_ok=True)
        doc = {"version": DOC_VERSION, **dataclasses.asdict(entry)}
        path = self._doc_path(entry.id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def remove(self, model_id: str) -> StoredModel | None:
        """Forget ``model_id``; delete its blob when no other entry uses the same digest."""
        entry = self.get(model_id)
        if entry is None:
            return None
        self._doc_path(model_id).unlink(missing_ok=True)
        self.drop_unused(entry.digest)
        return entry

    def drop_unused(self, digest: str) -> bool:
        """Delete the blob of ``digest`` (and its cached manifest) when no document names
        it any more; True when it was deleted. A reader keeps its open file until done."""
        if any(other.digest == digest for other in self.list()):
            return False
        blob = self.blob_path(digest)
        blob.unlink(missing_ok=True)
        sidecar_path(blob).unlink(missing_ok=True)
        logger.info("deleted blob %s (no model uses it now)", blob.name)
        return True

    def free_bytes(self) -> int:
        """Free bytes on the disk that holds the blobs."""
        where = self.blobs if self.blobs.exists() else self.root
        while not where.exists() and where != where.parent:
            where = where.parent
        return shutil.disk_usage(where).free

    def _doc_path(self, model_id: str) -> Path:
        # Ids may hold "/" (owner/model): percent-encode so every id is one plain name.
        return self.pulled / f"{quote(model_id, safe='')}.json"

    def _read(self, path: Path) -> StoredModel | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            entry = _entry_from_doc(doc)
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("skipping model document %s: %s", path, exc)
            return None
        if entry.id != unquote(path.name[:-len(".json")]):
            logger.warning("skipping model document %s: it names model %r", path, entry.id)
            return None
        return entry


def _entry_from_doc(doc: Any) -> StoredModel:
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    if doc.get("version") != DOC_VERSION:
        raise ValueError(f"version: {doc.get('version')!r}, expected {DOC_VERSION}")
    known = {f.name for f in dataclasses.fields(StoredModel)}
    fields = {k: v for k, v in doc.items() if k in known}
    missing = {"id", "digest", "file", "size"} - fields.keys()
    if missing:
        raise ValueError("missing " + ", ".join(sorted(missing)))
    return StoredModel(**fields)
