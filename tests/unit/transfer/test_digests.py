"""The digest cache: computed once, reused while size and mtime hold, never trusted stale."""

from __future__ import annotations

import os
from pathlib import Path

from peerllm.transfer.digests import DigestCache, sidecar_path
from peerllm.wire.blob import MIN_CHUNK_BYTES, manifest_of


def test_manifest_is_cached_next_to_the_file(tmp_path: Path) -> None:
    data = os.urandom(3 * MIN_CHUNK_BYTES + 11)
    f = tmp_path / "m.gguf"
    f.write_bytes(data)
    cache = DigestCache(chunk_bytes=MIN_CHUNK_BYTES)
    assert cache.cached(f) is None
    m = cache.manifest(f)
    assert m == manifest_of(data, MIN_CHUNK_BYTES)
    assert sidecar_path(f).is_file()
    assert DigestCache(chunk_bytes=MIN_CHUNK_BYTES).cached(f) == m


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"a" * 1000)
    cache = DigestCache(chunk_bytes=MIN_CHUNK_BYTES)
    first = cache.manifest(f)
    f.write_bytes(b"b" * 1001)
    assert cache.cached(f) is None
    second = cache.manifest(f)
    assert second != first and second == manifest_of(b"b" * 1001, MIN_CHUNK_BYTES)


def test_a_corrupt_sidecar_is_ignored(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"abc" * 500)
    sidecar_path(f).write_text("{not json", encoding="utf-8")
    cache = DigestCache(chunk_bytes=MIN_CHUNK_BYTES)
    assert cache.cached(f) is None
    assert cache.manifest(f) == manifest_of(b"abc" * 500, MIN_CHUNK_BYTES)


def test_a_read_only_folder_uses_the_fallback(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    f = ro / "m.gguf"
    f.write_bytes(b"z" * 5000)
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: make the sidecar path a folder
            sidecar_path(f).mkdir()
        cache = DigestCache(tmp_path / "fallback", chunk_bytes=MIN_CHUNK_BYTES)
        m = cache.manifest(f)
        assert list((tmp_path / "fallback").iterdir())
        assert DigestCache(tmp_path / "fallback", chunk_bytes=MIN_CHUNK_BYTES).cached(f) == m
    finally:
        ro.chmod(0o755)
