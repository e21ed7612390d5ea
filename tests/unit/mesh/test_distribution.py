"""The node's model-file parts over a real store in tmp_path: the blob catalog, the
installer, the specs of pulled models at start, models.share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peerllm.config import InferenceConfig
from peerllm.inference.registry import ModelRegistry, open_registry
from peerllm.inference.specs import ModelSpec
from peerllm.mesh.blobs import NodeCatalog
from peerllm.mesh.digesting import Digests
from peerllm.mesh.distribution import share_policy
from peerllm.mesh.installing import StoreInstaller, stored_specs
from peerllm.mesh.pull_ports import DownloadPlan
from peerllm.mesh.pulls import Transfer
from peerllm.testing import FakeBackend, write_fake_gguf
from peerllm.transfer.digests import DigestCache
from peerllm.transfer.store import ModelStore, StoredModel, blob_name
from peerllm.wire import blob as wb
from tests.unit.mesh.pull_fakes import FakeDownload


def put_blob(store: ModelStore, cache: DigestCache, size: int = 200_000) -> wb.Manifest:
    """A valid fake GGUF in the store's blobs, its manifest cached; returns the manifest."""
    store.blobs.mkdir(parents=True, exist_ok=True)
    tmp = store.blobs / "tmp.gguf"
    write_fake_gguf(tmp, size)
    manifest = wb.manifest_of(tmp.read_bytes())
    path = store.blob_path(manifest.digest)
    tmp.rename(path)
    cache.remember(path, manifest)
    return manifest


def stored(manifest: wb.Manifest, model_id: str = "m") -> StoredModel:
    return StoredModel(id=model_id, digest=manifest.digest, file=blob_name(manifest.digest),
                       size=manifest.size, chat_format="chatml", source="peer:x")


@pytest.fixture
async def registry() -> AsyncIterator[ModelRegistry]:
    async with open_registry([], config=InferenceConfig(warmup_tokens=0),
                             backend=FakeBackend()) as reg:
        yield reg


def test_share_policy() -> None:
    vouched = {"v"}.__contains__
    assert share_policy("any", trusted_peers=(), vouched=vouched)("anyone")
    assert not share_policy("off", trusted_peers=("t",), vouched=vouched)("t")
    trusted = share_policy("trusted", trusted_peers=("t",), vouched=vouched)
    assert trusted("t") and trusted("v") and not trusted("stranger")


def test_the_catalog_serves_stored_files_by_digest_and_id_never_paths(tmp_path: Path) -> None:
    store, cache = ModelStore(tmp_path / "models"), DigestCache()
    manifest = put_blob(store, cache)
    store.add(stored(manifest))
    catalog = NodeCatalog(store=store, cache=cache, digests=Digests(), registry=lambda: None,
                          in_flight=list)
    by_digest = catalog.lookup(manifest.digest)
    assert by_digest is not None and by_digest.manifest == manifest
    assert by_digest.meta is not None and by_digest.meta.chat_format == "chatml"
    by_id = catalog.lookup("m")
    assert by_id is not None and by_id.path == store.blob_path(manifest.digest)
    for ref in (str(by_id.path), "../m", "sha256:" + "00" * 32, "nosuch"):
        assert catalog.lookup(ref) is None


def test_the_catalog_serves_a_download_in_flight(tmp_path: Path) -> None:
    store, cache = ModelStore(tmp_path / "models"), DigestCache()
    download = FakeDownload(DownloadPlan(digest=None, url=None, sources=(), fallback=(),
                                         manifest=None, on_progress=lambda p: None), None)
    t = Transfer(seq=1, ref="m", digest=None, model_id="m", origin="user")
    catalog = NodeCatalog(store=store, cache=cache, digests=Digests(), registry=lambda: None,
                          in_flight=lambda: [(t, download)])
    from tests.unit.mesh.pull_fakes import MANIFEST

    assert catalog.lookup(MANIFEST.digest) is None  # its manifest is not known yet
    download.manifest = MANIFEST
    download.verified.add(0)
    entry = catalog.lookup(MANIFEST.digest)
    assert entry is not None and entry.have is not None
    assert entry.have(0) and not entry.have(1) and entry.path == download.partial_path


async def test_the_installer_stores_registers_and_announces(tmp_path: Path,
                                                            registry: ModelRegistry) -> None:
    store, cache = ModelStore(tmp_path / "models"), DigestCache()
    manifest = put_blob(store, cache)
    announced: list[bool] = []
    installer = StoreInstaller(store=store, cache=cache, registry=lambda: registry,
                               announce=lambda: announced.append(True))
    assert installer.present(manifest.digest) is None
    entry = await installer.install(digest=manifest.digest, size=manifest.size,
                                    meta=wb.ModelMeta(id="m", context_size=512),
                                    source="peer:x", manifest=manifest)
    assert entry.id == "m" and store.get("m") == entry and announced == [True]
    spec = registry.spec("m")
    assert spec.path == store.blob_path(manifest.digest) and spec.digest == manifest.digest
    assert spec.context_size == 512
    found = installer.present(manifest.digest)
    assert found is not None and found.id == "m"
    serving = installer.serving("m")
    assert serving is not None and serving.digest == manifest.digest


def test_pulled_models_become_specs_at_start_unless_gone_or_taken(tmp_path: Path) -> None:
    store, cache = ModelStore(tmp_path / "models"), DigestCache()
    manifest = put_blob(store, cache)
    store.add(stored(manifest, "kept"))
    store.add(stored(manifest, "taken"))
    gone = StoredModel(id="gone", digest="sha256:" + "11" * 32,
                       file=blob_name("sha256:" + "11" * 32), size=5)
    store.add(gone)
    specs = stored_specs(store, taken={"taken"})
    assert [(s.id, s.digest, s.chat_format) for s in specs] == [
        ("kept", manifest.digest, "chatml")]


async def test_deleting_a_pinned_id_deletes_the_pulled_file_but_never_a_given_one(
        tmp_path: Path, registry: ModelRegistry) -> None:
    store, cache = ModelStore(tmp_path / "models"), DigestCache()
    manifest = put_blob(store, cache)
    installer = StoreInstaller(store=store, cache=cache, registry=lambda: registry,
                               announce=lambda: None)
    await installer.install(digest=manifest.digest, size=manifest.size,
                            meta=wb.ModelMeta(id="m"), source="peer:x")
    removed = await installer.remove(f"m@{wb.short_digest(manifest.digest, 8)}")
    assert removed is not None and removed.id == "m"
    assert store.get("m") is None and not store.blob_path(manifest.digest).exists()
    given = tmp_path / "given.gguf"
    write_fake_gguf(given, 10_000)
    registry.add(ModelSpec(id="g", path=given))
    assert await installer.remove("g") is None
    assert given.exists()
