"""Partial files: resumed only when they are the same file, torn records ignored,
chunks trusted only when their bytes are on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peerllm.errors import DigestMismatch, NotEnoughSpace
from peerllm.transfer.partial import (
    RECORD_BYTES,
    SPACE_MARGIN_BYTES,
    open_partial,
    partial_path,
    state_path,
)
from peerllm.wire.blob import MIN_CHUNK_BYTES, manifest_of

CB = MIN_CHUNK_BYTES
DATA = os.urandom(6 * CB + 99)
M = manifest_of(DATA, CB)


def chunk(i: int, data: bytes = DATA) -> bytes:
    return data[i * CB:(i + 1) * CB]


def write(target: Path, indices: list[int], manifest: object = M) -> None:
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest,
                     manifest=manifest)  # type: ignore[arg-type]
    for i in indices:
        p.write_chunk(i, chunk(i), M.chunks[i])
    p.close()


def reopen(target: Path) -> set[int]:
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest, manifest=M)
    try:
        return set(p.digests)
    finally:
        p.close()


def test_verified_chunks_survive_a_reopen(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0, 1, 4])
    assert reopen(target) == {0, 1, 4}
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest, manifest=M)
    assert p.resumed_bytes == 3 * CB and p.read_chunk(4) == chunk(4)
    p.close()


@pytest.mark.parametrize("cut", [1, RECORD_BYTES // 2, RECORD_BYTES - 1])
def test_a_torn_last_record_is_ignored(tmp_path: Path, cut: int) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0, 1, 2])
    raw = state_path(target).read_bytes()
    state_path(target).write_bytes(raw[:-cut])
    assert reopen(target) == {0, 1}
    # The rewritten log is whole again: a chunk written after the resume is kept.
    write(target, [3])
    assert reopen(target) == {0, 1, 3}


def test_a_chunk_whose_bytes_are_not_on_disk_is_not_trusted(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0, 1, 5])
    with partial_path(target).open("r+b") as f:
        f.truncate(2 * CB)
    assert reopen(target) == {0, 1}


def test_a_partial_for_another_manifest_is_discarded(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0, 1])
    other = manifest_of(os.urandom(len(DATA)), CB)
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=other.digest,
                     manifest=other)
    assert p.digests == {} and partial_path(target).stat().st_size == 0
    p.close()


def test_a_partial_of_another_geometry_is_discarded(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0, 1])
    p = open_partial(target, size=M.size, chunk_bytes=2 * CB, expected=M.digest,
                     manifest=None)
    assert p.digests == {}
    p.close()


def test_a_manifest_learnt_later_keeps_only_matching_chunks(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest, manifest=None)
    p.write_chunk(0, chunk(0), M.chunks[0])
    p.write_chunk(1, chunk(1), b"\x00" * 32)  # what a lying HTTP server's bytes hashed to
    p.close()
    assert reopen(target) == {0}


def test_a_corrupt_state_file_starts_afresh(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0])
    state_path(target).write_bytes(b"garbage\n" + b"0" * RECORD_BYTES)
    assert reopen(target) == set()


def test_space_is_checked_for_the_missing_bytes_only(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, [0, 1, 2])
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest, manifest=M)
    missing = M.size - 3 * CB
    p.check_space(missing + SPACE_MARGIN_BYTES)
    with pytest.raises(NotEnoughSpace) as info:
        p.check_space(missing + SPACE_MARGIN_BYTES - 1)
    assert info.value.needed == missing + SPACE_MARGIN_BYTES
    p.close()


def test_install_renames_only_a_matching_file(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    write(target, list(range(M.count)))
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest, manifest=M)
    with pytest.raises(DigestMismatch):
        p.install("sha256:" + "0" * 64)
    assert not target.exists() and not partial_path(target).exists()
    write(target, list(range(M.count)))
    p = open_partial(target, size=M.size, chunk_bytes=CB, expected=M.digest, manifest=M)
    p.install(M.digest)
    assert target.read_bytes() == DATA
    assert not partial_path(target).exists() and not state_path(target).exists()
