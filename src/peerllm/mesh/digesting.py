"""The digests of the model files we serve, computed in the background, one at a time.

``keep_digests`` looks at the registry every few seconds and, for each model whose file
it has not hashed yet (or whose file changed since), computes the file's manifest
(transfer.digests.DigestCache: sha256 + chunk BLAKE3s, cached in a sidecar) in a worker
thread, records the digest with ``registry.set_digest`` and calls ``on_change`` (the node
passes Membership.announce, so the DHT and mDNS learn it soon). Never on a request's path.

Which file a model's digest is of (the simplest honest rule): the file it serves.
    bundled         the assembled GGUF (``assemble_bundled()``, blocking: in the thread)
    one file        that file (``path``, or a single variant)
    several variants  the variant loaded (or last tried); none before the first load,
                    since which one fits is decided at load time
A file that cannot be read is logged once and tried again when it changes (size/mtime).

``Digests`` keeps each manifest by digest, with its path, for the blob catalog (part D).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from ..errors import ModelLoadError, ModelNotFound
from ..inference.catalog import assemble_bundled
from ..inference.registry import ModelRegistry, ModelStatus
from ..inference.specs import ModelSpec
from ..transfer.digests import DigestCache
from ..wire.blob import Manifest, parse_digest

logger = logging.getLogger(__name__)

POLL_S: Final = 5.0
"""How often the registry is looked at for models (or files) not hashed yet."""

Stamp = tuple[int, int] | None
"""A file's (size, mtime_ns); None when it cannot be stat'ed."""


@dataclass(frozen=True)
class Hashed:
    """What was found for one model: its spec, the file hashed, and the manifest (None:
    the file could not be read, not retried until ``stamp`` changes)."""

    spec: ModelSpec
    path: Path | None
    stamp: Stamp
    manifest: Manifest | None


class Digests:
    """The manifests of the files our models serve, by model and by digest."""

    def __init__(self) -> None:
        self._by_model: dict[str, Hashed] = {}

    def manifest(self, digest: str) -> Manifest | None:
        """The manifest of the file with this digest, if one of our models serves it."""
        found = self._find(digest)
        return found.manifest if found is not None else None

    def path(self, digest: str) -> Path | None:
        """Where the file with this digest is, if one of our models serves it."""
        found = self._find(digest)
        return found.path if found is not None else None

    def of_model(self, model_id: str) -> Hashed | None:
        return self._by_model.get(model_id)

    def record(self, model_id: str, hashed: Hashed) -> None:
        self._by_model[model_id] = hashed

    def forget_except(self, model_ids: set[str]) -> None:
        for gone in set(self._by_model) - model_ids:
            del self._by_model[gone]

    def _find(self, digest: str) -> Hashed | None:
        try:
            digest = parse_digest(digest)
        except ValueError:
            return None
        for hashed in self._by_model.values():
            if hashed.manifest is not None and hashed.manifest.digest == digest:
                return hashed
        return None


async def keep_digests(registry: ModelRegistry, cache: DigestCache, *,
                       on_change: Callable[[], None], digests: Digests | None = None,
                       poll_s: float = POLL_S) -> None:
    """Forever: hash the files of the models not hashed yet; see the module docstring."""
    book = digests if digests is not None else Digests()
    while True:
        await digest_pass(registry, cache, book, on_change=on_change)
        await trio.sleep(poll_s)


async def digest_pass(registry: ModelRegistry, cache: DigestCache, book: Digests, *,
                      on_change: Callable[[], None]) -> None:
    """One look at every registered model (hashing, one at a time, what is new)."""
    statuses = registry.list()
    book.forget_except({st.id for st in statuses})
    for status in statuses:
        try:
            spec = registry.spec(status.id)
        except ModelNotFound:  # removed since the list was taken
            continue
        known = book.of_model(status.id)
        if known is not None and known.spec is spec and spec.bundled:
            continue  # the bundled file does not change while we run
        path = await _file_of(spec, status)
        if path is None:
            if spec.bundled:  # not installed: said once, not every pass
                book.record(status.id, Hashed(spec=spec, path=None, stamp=None, manifest=None))
            continue
        stamp = await trio.to_thread.run_sync(_stamp, path)
        if known is not None and (known.spec, known.path, known.stamp) == (spec, path, stamp):
            continue
        try:
            manifest: Manifest | None = await trio.to_thread.run_sync(cache.manifest, path)
        except OSError as exc:
            logger.warning("model %s: cannot compute the digest of %s: %s (tried again when "
                           "the file changes)", status.id, path, exc.strerror or exc)
            manifest = None
        book.record(status.id, Hashed(spec=spec, path=path, stamp=stamp, manifest=manifest))
        if manifest is not None and _publish(registry, status.id, spec, manifest.digest):
            on_change()


async def _file_of(spec: ModelSpec, status: ModelStatus) -> Path | None:
    """The file whose digest is the model's (module docstring), or None for now."""
    if spec.bundled:
        try:
            return await trio.to_thread.run_sync(assemble_bundled)
        except ModelLoadError as exc:
            logger.warning("model %s: no digest: %s", spec.id, exc.message)
            return None
    candidates = spec.candidates()
    if len(candidates) == 1:
        return candidates[0][1]
    return status.path  # the variant loaded (or last tried); None before the first load


def _publish(registry: ModelRegistry, model_id: str, spec: ModelSpec, digest: str) -> bool:
    """Record ``digest`` for the model; True when that changed what we advertise."""
    try:
        current = registry.spec(model_id)
        if current is not spec or registry.status(model_id).digest == digest:
            return False
    except ModelNotFound:
        return False
    if spec.digest is not None and spec.digest != digest:
        logger.warning("model %s: its file's digest is %s, not %s as recorded; serving it "
                       "as %s", model_id, digest, spec.digest, digest)
    registry.set_digest(model_id, digest, spec=spec)
    logger.info("model %s is at %s", model_id, digest)
    return True


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
