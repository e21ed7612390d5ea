"""Digests and manifests: one-pass building, chunk geometry, the map codec."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.wire._fields import FieldError
from peerllm.wire.blob import (
    MIN_CHUNK_BYTES,
    Manifest,
    ManifestBuilder,
    chunk_digest,
    manifest_from_map,
    manifest_of,
    manifest_to_map,
    parse_digest,
    short_digest,
)

HEX = "ab" * 32


@pytest.mark.parametrize("text", [f"sha256:{HEX}", f"sha256-{HEX}", HEX, HEX.upper()])
def test_parse_digest_accepts_the_usual_forms(text: str) -> None:
    assert parse_digest(text) == f"sha256:{HEX}"
    assert short_digest(text) == HEX[:12]


@pytest.mark.parametrize("text", ["", "sha256:", f"md5:{HEX}", HEX[:-1], f"sha256:{HEX}0",
                                  "../etc/passwd"])
def test_parse_digest_names_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="expected sha256:<64 hex digits>"):
        parse_digest(text)


@given(data=st.binary(max_size=5 * MIN_CHUNK_BYTES + 7),
       cuts=st.lists(st.integers(0, 5 * MIN_CHUNK_BYTES + 7), max_size=6))
def test_builder_is_the_same_whatever_the_writes(data: bytes, cuts: list[int]) -> None:
    builder = ManifestBuilder(MIN_CHUNK_BYTES)
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        builder.update(data[last:cut])
        last = cut
    m = builder.finish()
    assert m == manifest_of(data, MIN_CHUNK_BYTES)
    assert m.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert m.size == len(data)
    for i in range(m.count):
        offset, length = m.span(i)
        assert m.check_chunk(i, data[offset:offset + length])
    assert sum(m.span(i)[1] for i in range(m.count)) == len(data)
    assert manifest_from_map(manifest_to_map(m)) == m


def test_a_changed_chunk_fails_its_check() -> None:
    data = bytes(range(256)) * 1024
    m = manifest_of(data, MIN_CHUNK_BYTES)
    bad = bytearray(data[:MIN_CHUNK_BYTES])
    bad[7] ^= 1
    assert not m.check_chunk(0, bytes(bad))
    assert not m.check_chunk(0, data[:MIN_CHUNK_BYTES - 1])
    with pytest.raises(IndexError):
        m.span(m.count)


def test_manifest_refuses_a_chunk_list_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="2 digests for 1 chunks"):
        Manifest(digest=HEX, size=10, chunk_bytes=MIN_CHUNK_BYTES,
                 chunks=(chunk_digest(b"a"), chunk_digest(b"b")))


@pytest.mark.parametrize(("change", "path"), [
    ({"size": -1}, "manifest.size"),
    ({"chunk_bytes": 10}, "manifest.chunk_bytes"),
    ({"chunks": b"x" * 31}, "manifest.chunks"),
    ({"digest": 5}, "manifest.digest"),
    ({"digest": "nope"}, "manifest"),
])
def test_manifest_from_map_names_the_bad_field(change: dict[str, object], path: str) -> None:
    good = manifest_to_map(manifest_of(b"hello" * 1000, MIN_CHUNK_BYTES))
    with pytest.raises(FieldError) as info:
        manifest_from_map({**good, **change})
    assert info.value.path == path
