"""Model files' manifests (sha256 digest and chunk digests), computed once and cached.

The cache is a small JSON file next to the model file (``<file>.peerllm.json``), valid
while the file's size and mtime are those recorded; where the file's folder is not
writable, it lives under a fallback folder. Computing one reads the file once (~1 s per
GB here): call it in a worker thread, never on a request's path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Final

from ..wire.blob import DEFAULT_CHUNK_BYTES, Manifest, ManifestBuilder, manifest_from_map
from ..wire.blob import manifest_to_map as _to_map

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX: Final = ".peerllm.json"
READ_BYTES: Final = 8 * 1024 * 1024
CACHE_VERSION: Final = 1


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


class DigestCache:
    """``manifest(path)``: the file's manifest, from its sidecar when still valid."""

    def __init__(self, fallback_dir: Path | None = None, *,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self._fallback = fallback_dir
        self._chunk_bytes = chunk_bytes

    def cached(self, path: Path) -> Manifest | None:
        """The cached manifest if it is still valid; never reads the model file."""
        try:
            st = path.stat()
        except OSError:
            return None
        for where in self._places(path):
            found = _read_sidecar(where, st)
            if found is not None:
                return found
        return None

    def manifest(self, path: Path) -> Manifest:
        """Blocking: the cached manifest, or read the whole file once and cache it.

        Raises:
            OSError: the file cannot be read.
        """
        found = self.cached(path)
        if found is not None:
            return found
        st = path.stat()
        built = compute_manifest(path, chunk_bytes=self._chunk_bytes)
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise OSError(f"{path} changed while its digest was computed")
        self._store(path, st, built)
        return built

    def remember(self, path: Path, manifest: Manifest) -> None:
        """Cache ``manifest`` for ``path`` as it is now (a file just downloaded and
        checked: its manifest is known without reading it again)."""
        try:
            st = path.stat()
        except OSError:
            return
        self._store(path, st, manifest)

    def _places(self, path: Path) -> list[Path]:
        out = [sidecar_path(path)]
        if self._fallback is not None:
            key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
            out.append(self._fallback / f"{key}{SIDECAR_SUFFIX}")
        return out

    def _store(self, path: Path, st: os.stat_result, m: Manifest) -> None:
        doc = {"version": CACHE_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
               "file": path.name, "manifest": manifest_to_json(m)}
        for where in self._places(path):
            try:
                where.parent.mkdir(parents=True, exist_ok=True)
                tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(doc), encoding="utf-8")
                os.replace(tmp, where)
                return
            except OSError as exc:
                logger.debug("cannot cache the digest of %s in %s: %s", path, where, exc)
        logger.info("digest of %s not cached (no writable place)", path)


def compute_manifest(path: Path, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Manifest:
    """Blocking: read ``path`` once and build its manifest."""
    builder = ManifestBuilder(chunk_bytes)
    buf = bytearray(READ_BYTES)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            builder.update(view[:n])
    return builder.finish()


def manifest_to_json(m: Manifest) -> dict[str, object]:
    """The manifest as a JSON object (chunk digests in base64), for files we write."""
    data = _to_map(m)
    return {**data, "chunks": base64.b64encode(data["chunks"]).decode("ascii")}


def manifest_from_json(doc: object) -> Manifest:
    """Raises ValueError (FieldError names the field) or TypeError when ``doc`` is not
    a manifest."""
    if not isinstance(doc, dict):
        raise TypeError("manifest: expected a JSON object")
    data = dict(doc)
    if not isinstance(data.get("chunks"), str):
        raise TypeError("manifest.chunks: expected base64 text")
    data["chunks"] = base64.b64decode(data["chunks"], validate=True)
    return manifest_from_map(data)


def _read_sidecar(where: Path, st: os.stat_result) -> Manifest | None:
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
        if doc.get("version") != CACHE_VERSION or doc.get("size") != st.st_size \
                or doc.get("mtime_ns") != st.st_mtime_ns:
            return None
        return manifest_from_json(doc["manifest"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # corrupt: recompute
        logger.debug("ignoring digest cache %s: %s", where, exc)
        return None
