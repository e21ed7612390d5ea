"""What makes a downloaded file a served model, and the download engine's factory: the
``Installer`` and ``OpenDownload`` ports of the Pulls service over the store, the
registry and the swarm engine.

A pulled model is a ``StoredModel`` document (pulled/<id>.json) naming its blob; at
start every document becomes a ModelSpec (``stored_specs``), as models.yaml entries do.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import trio

from ..errors import ModelNotFound, TransferError
from ..inference.registry import ModelRegistry
from ..inference.specs import DEFAULT_CONTEXT_SIZE, ModelSpec, ModelType
from ..transfer.digests import DigestCache
from ..transfer.ports import Progress
from ..transfer.store import ModelStore, StoredModel, blob_name, url_key
from ..transfer.swarm import SwarmDownload
from ..wire import blob as wb
from .pull_ports import Download, DownloadPlan, StoredEntry

logger = logging.getLogger(__name__)


def spec_of(entry: StoredModel, store: ModelStore, *, context_size: int = DEFAULT_CONTEXT_SIZE,
            gpu_layers: int = 0) -> ModelSpec:
    """The ModelSpec serving a pulled model's blob."""
    return ModelSpec(id=entry.id, path=store.blob_path(entry.digest),
                     type=cast(ModelType, entry.type), chat_format=entry.chat_format,
                     context_size=entry.context_size or context_size, gpu_layers=gpu_layers,
                     size_bytes=entry.size, replicas=entry.replicas, digest=entry.digest)


def stored_specs(store: ModelStore, *, taken: set[str],
                 context_size: int = DEFAULT_CONTEXT_SIZE, gpu_layers: int = 0
                 ) -> list[ModelSpec]:
    """Specs for the store's pulled models whose blob is there, but for ids in ``taken``
    (a --model file or models.yaml entry of the same id wins; logged)."""
    out: list[ModelSpec] = []
    for entry in store.list():
        if entry.id in taken:
            logger.info("pulled model %s is not served: another model has that id", entry.id)
        elif not store.blob_path(entry.digest).is_file():
            logger.warning("pulled model %s is not served: its file %s is gone", entry.id,
                           entry.file)
        else:
            out.append(spec_of(entry, store, context_size=context_size, gpu_layers=gpu_layers))
    return out


@dataclass(frozen=True, kw_only=True)
class ServedFile:
    """A model this node serves that was not pulled (a --model file): what Pulls says."""

    id: str
    digest: str
    size: int


class StoreInstaller:
    """The Installer port: the store, the registry (add or hot swap) and the announcement."""

    def __init__(self, *, store: ModelStore, cache: DigestCache,
                 registry: Callable[[], ModelRegistry | None], announce: Callable[[], None],
                 context_size: int = DEFAULT_CONTEXT_SIZE, gpu_layers: int = 0) -> None:
        self._store = store
        self._cache = cache
        self._registry = registry
        self._announce = announce
        self._context_size = context_size
        self._gpu_layers = gpu_layers

    def present(self, digest: str) -> StoredEntry | None:
        for entry in self._store.list():
            if entry.digest == digest and self._store.blob_path(digest).is_file():
                return entry
        registry = self._registry()
        for st in registry.list() if registry is not None else ():
            if st.digest == digest:
                return ServedFile(id=st.id, digest=digest, size=st.file_bytes or 0)
        return None

    def serving(self, model_id: str) -> StoredEntry | None:
        registry = self._registry()
        if registry is None:
            return None
        try:
            st = registry.status(model_id)
        except ModelNotFound:
            return None
        return ServedFile(id=model_id, digest=st.digest or "", size=st.file_bytes or 0)

    async def install(self, *, digest: str, size: int, meta: wb.ModelMeta,
                      source: str, manifest: wb.Manifest | None = None) -> StoredEntry:
        registry = self._registry()
        if registry is None:
            raise TransferError("this node has no model registry to serve the file from",
                                digest=digest)
        entry = StoredModel(id=meta.id, digest=digest, file=blob_name(digest), size=size,
                            type=meta.type, chat_format=meta.chat_format,
                            context_size=meta.context_size, source=source,
                            pulled_at=time.time())
        if manifest is not None:
            await trio.to_thread.run_sync(self._cache.remember,
                                          self._store.blob_path(digest), manifest)
        spec = spec_of(entry, self._store, context_size=self._context_size,
                       gpu_layers=self._gpu_layers)
        before = self._store.get(meta.id)
        await trio.to_thread.run_sync(self._store.add, entry)
        if before is not None and before.digest != digest:
            await trio.to_thread.run_sync(self._store.drop_unused, before.digest)
        try:
            registry.spec(meta.id)
        except ModelNotFound:
            registry.add(spec)
        else:
            registry.replace(spec)  # hot swap: running requests finish on the old file
        self._announce()
        logger.info("pulled model %s (%s, %d bytes) from %s", meta.id, digest, size,
                    source or "?")
        return entry

    async def remove(self, model_id: str, *, cancel: bool = False) -> StoredModel | None:
        """Stop serving ``model_id`` (waiting for its requests, or ``cancel``-ling them)
        and delete its file if it was pulled; returns the pulled model's entry, None for
        a file the node was given (--model, models.yaml), which stays on disk.

        Raises:
            ModelNotFound: no such model here.
        """
        registry = self._registry()
        if registry is None:
            raise ModelNotFound(model_id)
        spec = registry.spec(model_id)  # a pinned "id@<hex>" names spec.id's document
        stored = self._store.get(spec.id)
        await registry.remove(model_id, cancel=cancel)
        removed = None
        if stored is not None and spec.path == self._store.blob_path(stored.digest):
            removed = await trio.to_thread.run_sync(self._store.remove, spec.id)
        self._announce()
        logger.info("model %s deleted%s", spec.id,
                    f" with its file {stored.file}" if removed and stored else
                    " (its file stays: it was not pulled)")
        return removed


class StoreDownload:
    """A SwarmDownload into the store; a URL pull's file (named by its URL until its
    digest is known) is moved to its digest's name at the end."""

    def __init__(self, swarm: SwarmDownload, store: ModelStore) -> None:
        self._swarm = swarm
        self._store = store

    @property
    def manifest(self) -> wb.Manifest | None:
        return self._swarm.manifest

    @property
    def partial_path(self) -> Path:
        return self._swarm.partial_path

    def have(self, index: int) -> bool:
        return self._swarm.have(index)

    def progress(self) -> Progress:
        return self._swarm.progress()

    async def run(self) -> wb.Manifest:
        manifest = await self._swarm.run()
        final = self._store.blob_path(manifest.digest)
        if self._swarm.target != final:
            await trio.to_thread.run_sync(os.replace, self._swarm.target, final)
        return manifest


def download_factory(store: ModelStore, *, stall_timeout_s: float
                     ) -> Callable[[DownloadPlan], Download]:
    """The OpenDownload port: a SwarmDownload into ``store`` for each plan."""

    def open_download(plan: DownloadPlan) -> Download:
        if plan.digest is not None:
            target = store.blob_path(plan.digest)
        elif plan.url is not None:
            target = store.blobs / f"{url_key(plan.url)}.gguf"
        else:
            raise TransferError("a download needs a digest or a URL")
        store.blobs.mkdir(parents=True, exist_ok=True)
        swarm = SwarmDownload(target=target, sources=plan.sources, expected_digest=plan.digest,
                              manifest=plan.manifest, fallback=plan.fallback,
                              stall_timeout_s=stall_timeout_s, on_progress=plan.on_progress,
                              free_bytes=lambda _path: store.free_bytes())
        return StoreDownload(swarm, store)

    return open_download
