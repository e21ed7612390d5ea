"""The GGUF header check on crafted files: what it refuses, and that sound files pass."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.inference.gguf import GGML_BLOCKS, gguf_problem
from peerllm.testing import FAKE_GGUF, write_fake_gguf

F32, Q4_K = 0, 12


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def header(*, tensors: list[tuple[str, tuple[int, ...], int, int]] = (),  # type: ignore[assignment]
           version: int = 3, alignment: int | None = None) -> bytes:
    """A GGUF header: a string, a u32 and a string-array metadata entry, then tensors."""
    kv = [_str("general.name") + struct.pack("<I", 8) + _str("tiny"),
          _str("llama.context_length") + struct.pack("<II", 4, 2048),
          _str("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3)
          + b"".join(_str(t) for t in ("<s>", "a", "b"))]
    if alignment is not None:
        kv.append(_str("general.alignment") + struct.pack("<II", 4, alignment))
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv)) + b"".join(kv)
    for name, dims, kind, offset in tensors:
        out += _str(name) + struct.pack("<I", len(dims)) + b"".join(
            struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", kind, offset)
    return out


def data_start(h: bytes, alignment: int = 32) -> int:
    return -(-len(h) // alignment) * alignment


TENSORS = [("tok_embd", (256, 4), Q4_K, 0), ("norm", (8,), F32, 576)]
NEED = 576 + 32  # 4 Q4_K blocks of 144 bytes, then 8 floats


def write(path: Path, data: bytes, size: int | None = None) -> Path:
    path.write_bytes(data)
    if size is not None:
        os.truncate(path, size)
    return path


def test_a_sound_file_passes(tmp_path: Path) -> None:
    h = header(tensors=TENSORS)
    assert gguf_problem(write(tmp_path / "ok.gguf", h, data_start(h) + NEED)) is None
    assert gguf_problem(write_fake_gguf(tmp_path / "fake.gguf")) is None
    assert gguf_problem(write(tmp_path / "bare.gguf", FAKE_GGUF)) is None


def test_a_file_shorter_than_its_tensors_is_truncated(tmp_path: Path) -> None:
    h = header(tensors=TENSORS)
    problem = gguf_problem(write(tmp_path / "short.gguf", h, data_start(h) + NEED - 1))
    assert problem == (f"truncated: the header needs {data_start(h) + NEED} bytes, "
                       f"the file has {data_start(h) + NEED - 1}")


def test_the_alignment_in_the_metadata_is_honoured(tmp_path: Path) -> None:
    h = header(tensors=TENSORS, alignment=4096)
    assert gguf_problem(write(tmp_path / "a.gguf", h, 4096 + NEED)) is None
    assert gguf_problem(write(tmp_path / "b.gguf", h, 4096 + NEED - 1)) is not None
    bad = header(alignment=24)
    assert gguf_problem(write(tmp_path / "c.gguf", bad, 4096)) == (
        "header inconsistent: general.alignment 24 is not a power of two")


@pytest.mark.parametrize(("data", "problem"), [
    (b"PK\x03\x04" + bytes(100), "not a GGUF file (starts with b'PK\\x03\\x04')"),
    (b"GG", "not a GGUF file (2 bytes)"),
    (b"", "not a GGUF file (0 bytes)"),
    (b"GGUF\x03\x00", "truncated: the file ends inside the version"),
    (b"GGUF" + struct.pack("<I", 3) + bytes(4), "truncated: the file ends inside the tensor count"),
    (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "unsupported GGUF version 1 (supported: 2, 3)"),
    (b"GGUF" + struct.pack("<IQQ", 0, 0, 0), "unsupported GGUF version 0 (supported: 2, 3)"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 0) + bytes(64),
     "truncated or corrupt header: 0 metadata entries and 1099511627776 tensors cannot fit "
     "in 88 bytes"),
])
def test_crafted_headers_are_refused_with_their_problem(tmp_path: Path, data: bytes,
                                                        problem: str) -> None:
    assert gguf_problem(write(tmp_path / "m.gguf", data)) == problem


def test_a_header_cut_anywhere_is_refused(tmp_path: Path) -> None:
    h = header(tensors=TENSORS)
    for cut in range(len(h)):
        assert gguf_problem(write(tmp_path / "cut.gguf", h[:cut])) is not None, cut


def test_unreadable_files(tmp_path: Path) -> None:
    assert gguf_problem(tmp_path / "missing.gguf") == "no such file"
    assert gguf_problem(tmp_path) == "is a directory, not a GGUF file"


def test_a_header_with_a_bad_dimension_count_is_inconsistent(tmp_path: Path) -> None:
    h = header(tensors=[("x", (1, 1, 1, 1, 1), F32, 0)])
    assert gguf_problem(write(tmp_path / "m.gguf", h, 4096)) == (
        "header inconsistent: a tensor has 5 dimensions")


def test_every_known_type_has_whole_blocks() -> None:
    assert all(block > 0 and size > 0 for block, size in GGML_BLOCKS.values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_after_the_magic_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                                  tail: bytes) -> None:
    path = tmp_path_factory.mktemp("h") / "m.gguf"
    problem = gguf_problem(write(path, b"GGUF" + tail))
    assert problem is None or isinstance(problem, str)
