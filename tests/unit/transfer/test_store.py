"""The models store: documents written atomically, hostile ones skipped, blobs shared."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from peerllm.transfer.digests import sidecar_path
from peerllm.transfer.store import ModelStore, StoredModel, blob_name, url_key

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def entry(model_id: str, digest: str = D1, **kw: object) -> StoredModel:
    return StoredModel(id=model_id, digest=digest, file=blob_name(digest), size=10, **kw)  # type: ignore[arg-type]


def test_documents_round_trip_and_replace_by_id(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = entry("owner/model:q4", source="https://example.org/m.gguf", pulled_at=1.5,
                  replicas=2, chat_format="gemma", context_size=4096)
    store.add(first)
    assert store.get("owner/model:q4") == first
    store.add(entry("owner/model:q4", D2))
    assert [e.digest for e in store.list()] == [D2]
    assert not list(store.pulled.glob("*.tmp"))


def test_paths_are_content_addressed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.blob_path(D1) == tmp_path / "blobs" / f"sha256-{'a' * 64}.gguf"
    assert store.partial_path(D1).name == f"sha256-{'a' * 64}.gguf.partial"
    key = url_key("https://example.org/m.gguf")
    assert store.partial_path(key).name == f"{key}.gguf.partial" and len(key) == 36
    with pytest.raises(ValueError, match="not a digest"):
        store.partial_path("../../etc/passwd")


def test_remove_keeps_a_blob_another_model_uses(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.blobs.mkdir(parents=True)
    store.blob_path(D1).write_bytes(b"x" * 10)
    store.add(entry("a"))
    store.add(entry("b"))
    assert store.remove("a") == entry("a")
    assert store.blob_path(D1).exists()
    sidecar_path(store.blob_path(D1)).write_text("{}", encoding="utf-8")
    assert store.remove("b") == entry("b")
    assert not store.blob_path(D1).exists()
    assert not sidecar_path(store.blob_path(D1)).exists()
    assert store.remove("b") is None and store.list() == []


def test_a_replaced_models_old_blob_goes_with_its_cached_manifest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.blobs.mkdir(parents=True)
    for digest in (D1, D2):
        store.blob_path(digest).write_bytes(b"x" * 10)
        sidecar_path(store.blob_path(digest)).write_text("{}", encoding="utf-8")
    store.add(entry("a", D1))
    store.add(entry("b", D2))
    assert not store.drop_unused(D1)  # "a" still names it
    store.add(entry("a", D2))  # a new version of "a"
    assert store.drop_unused(D1)
    assert not store.blob_path(D1).exists() and not sidecar_path(store.blob_path(D1)).exists()
    assert store.blob_path(D2).exists()


@pytest.mark.parametrize("bad", [
    {"file": "../../../etc/passwd"},
    {"file": "/etc/passwd"},
    {"file": "sub/" + blob_name(D1)},
    {"file": blob_name(D2)},  # not the digest's blob
    {"file": blob_name(D1) + ".partial"},
    {"id": "../escape"},
    {"id": "other"},  # not the id its file name says
    {"digest": "md5:abc"},
    {"size": -1},
    {"size": "10"},
    {"version": 99},
    {"type": "python"},
])
def test_hostile_documents_are_skipped_and_named(tmp_path: Path, bad: dict[str, object],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = ModelStore(tmp_path)
    store.add(entry("good"))
    doc = {"version": 1, "id": "evil", "digest": D1, "file": blob_name(D1), "size": 10, **bad}
    (store.pulled / "evil.json").write_text(json.dumps(doc), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert [e.id for e in store.list()] == ["good"]
    assert "evil.json" in caplog.text
    assert store.get("evil") is None
    assert store.remove("evil") is None


def test_corrupt_json_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ModelStore(tmp_path)
    store.pulled.mkdir(parents=True)
    (store.pulled / "x.json").write_text("{not json", encoding="utf-8")
    (store.pulled / "y.json").write_text("[1, 2]", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert store.list() == []
    assert "x.json" in caplog.text and "y.json" in caplog.text


def test_an_entry_refuses_a_bad_file_name() -> None:
    with pytest.raises(ValueError, match="file"):
        StoredModel(id="m", digest=D1, file="../x.gguf", size=1)
    with pytest.raises(ValueError, match="id"):
        StoredModel(id="", digest=D1, file=blob_name(D1), size=1)


def test_free_bytes_before_the_folder_exists(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "not" / "yet").free_bytes() > 0
