"""The BlobCatalog: which files this node serves over /peerllm/blob/1.0.0, by digest or
model id (p2p.blob.BlobServer's port).

Three places, in order: downloads in flight (their verified chunks, so a node still
downloading already serves what it checked), the files the store holds (pulled
models, their manifests cached when they were downloaded), and the registry's models
whose manifest the digest task has computed (mesh/digesting.Digests). Paths come from
the store and the registry only: a ref is never a path, and nothing outside those files
is served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ModelNotFound
from ..inference.registry import ModelRegistry
from ..inference.specs import ModelSpec
from ..p2p.blob import BlobEntry
from ..transfer.digests import DigestCache
from ..transfer.store import ModelStore, StoredModel
from ..wire import blob as wb
from .digesting import Digests
from .pull_ports import Download
from .pulls import Transfer

InFlight = Callable[[], Sequence[tuple[Transfer, Download]]]


def meta_of_spec(spec: ModelSpec) -> wb.ModelMeta:
    return wb.ModelMeta(id=spec.id, type=spec.type, chat_format=spec.chat_format,
                        context_size=spec.context_size)


def meta_of_stored(entry: StoredModel) -> wb.ModelMeta:
    return wb.ModelMeta(id=entry.id, type=entry.type, chat_format=entry.chat_format,
                        context_size=entry.context_size)


class NodeCatalog:
    """``lookup(ref)`` over the downloads, the store and the registry (see the module)."""

    def __init__(self, *, store: ModelStore, cache: DigestCache, digests: Digests,
                 registry: Callable[[], ModelRegistry | None], in_flight: InFlight) -> None:
        self._store = store
        self._cache = cache
        self._digests = digests
        self._registry = registry
        self._in_flight = in_flight

    def lookup(self, ref: str) -> BlobEntry | None:
        digest = wb.prefixed_digest(ref)
        if digest is not None:
            return (self._downloading(digest) or self._stored(digest)
                    or self._registered(digest))
        return self._by_id(ref)

    def _downloading(self, digest: str) -> BlobEntry | None:
        for t, d in self._in_flight():
            m = d.manifest
            if m is not None and m.digest == digest:
                meta = wb.ModelMeta(id=t.model_id) if t.model_id else None
                return BlobEntry(manifest=m, path=d.partial_path, meta=meta, have=d.have)
        return None

    def _stored(self, digest: str) -> BlobEntry | None:
        for entry in self._store.list():
            if entry.digest == digest:
                found = self._file(self._store.blob_path(digest), digest, meta_of_stored(entry))
                if found is not None:
                    return found
        return None

    def _registered(self, digest: str) -> BlobEntry | None:
        registry = self._registry()
        manifest, path = self._digests.manifest(digest), self._digests.path(digest)
        if registry is None or manifest is None or path is None:
            return None
        for st in registry.list():
            if st.digest == digest and st.advertised:
                return BlobEntry(manifest=manifest, path=path,
                                 meta=meta_of_spec(registry.spec(st.id)))
        return None

    def _by_id(self, model_id: str) -> BlobEntry | None:
        registry = self._registry()
        hashed = self._digests.of_model(model_id)
        if registry is not None and hashed is not None and hashed.manifest is not None \
                and hashed.path is not None:
            try:
                spec, st = registry.spec(model_id), registry.status(model_id)
            except ModelNotFound:
                pass
            else:
                if st.advertised and hashed.spec is spec:  # not an older version's file
                    return BlobEntry(manifest=hashed.manifest, path=hashed.path,
                                     meta=meta_of_spec(spec))
        entry = self._store.get(model_id)
        if entry is not None:
            return self._file(self._store.blob_path(entry.digest), entry.digest,
                              meta_of_stored(entry))
        return None

    def _file(self, path: Path, digest: str, meta: wb.ModelMeta) -> BlobEntry | None:
        """The file at ``path`` when its cached manifest says it is ``digest``."""
        m = self._cache.cached(path)
        if m is None or m.digest != digest:
            return None
        return BlobEntry(manifest=m, path=path, meta=meta)
