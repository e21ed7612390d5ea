"""A cheap structural check of a GGUF file: header, metadata, tensor table, file size.

A node must not advertise a model it cannot load: a truncated download used to be
announced to the mesh and answer 503 forever. ``gguf_problem`` walks the header the
way llama.cpp's loader does (magic, version, key/value metadata, tensor infos) over a
read-only memory map, so only the header's pages are read, never the tensor data of a
multi-GB file; then it checks that the file is long enough for every tensor the header
lists (data start + offset + size). Every count is checked against the bytes left
before it is trusted, so a hostile header cannot make the walk loop or allocate.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Final

GGUF_MAGIC: Final = b"GGUF"
SUPPORTED_VERSIONS: Final = (2, 3)  # v1 (32-bit counts) is refused by llama.cpp too
DEFAULT_ALIGNMENT: Final = 32
MAX_DIMS: Final = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH: Final = 4

# Metadata value types (gguf.h): fixed sizes; 8 = string, 9 = array.
_STRING, _ARRAY = 8, 9
_FIXED: Final = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_UINT32 = 4

# ggml tensor types -> (elements per block, bytes per block), from ggml's type traits.
# A type not listed (a newer one) is not size-checked: refusing a good model is worse.
GGML_BLOCKS: Final[dict[int, tuple[int, int]]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}


class _Truncated(Exception):
    """The header runs past the end of the file (internal: becomes a problem string)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Cursor:
    """Reads little-endian values from the map, refusing to run past its end."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def left(self) -> int:
        return self.size - self.pos

    def skip(self, n: int, what: str) -> None:
        if n < 0 or n > self.left():
            raise _Truncated(what)
        self.pos += n

    def unpack(self, fmt: str, what: str) -> int:
        n = struct.calcsize(fmt)
        if n > self.left():
            raise _Truncated(what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return int(value)

    def string(self, what: str) -> bytes:
        n = self.unpack("<Q", what)
        if n > self.left():
            raise _Truncated(what)
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip_string(self, what: str) -> None:
        self.skip(self.unpack("<Q", what), what)


def gguf_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as a GGUF model, or None when it looks sound.

    The answer names the problem without the path (callers add it): "no such file",
    "cannot read: Permission denied", "not a GGUF file (starts with b'PK\\x03\\x04')",
    "truncated: the file ends inside the tensor table", "truncated: the header needs
    1234567 bytes, the file has 1000"...
    """
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            if size < len(GGUF_MAGIC):
                return f"not a GGUF file ({size} bytes)"
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _check(buf, size)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory, not a GGUF file"
    except OSError as exc:
        return f"cannot read: {exc.strerror or type(exc).__name__}"


def _check(buf: mmap.mmap, size: int) -> str | None:
    magic = buf[:4]
    if magic != GGUF_MAGIC:
        return f"not a GGUF file (starts with {magic!r})"
    cur = _Cursor(buf, size)
    cur.pos = 4
    try:
        version = cur.unpack("<I", "the version")
        if version not in SUPPORTED_VERSIONS:
            return f"unsupported GGUF version {version} (supported: 2, 3)"
        n_tensors = cur.unpack("<Q", "the tensor count")
        n_kv = cur.unpack("<Q", "the metadata count")
        # Smallest possible entries: a kv is 8 (key length) + 4 (type) + 1 bytes, a
        # tensor info 8 + 4 + 8 + 4 + 8 bytes; bigger counts cannot fit in the file.
        if n_kv * 13 > cur.left() or n_tensors * 32 > cur.left():
            return (f"truncated or corrupt header: {n_kv} metadata entries and {n_tensors} "
                    f"tensors cannot fit in {size} bytes")
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = cur.string("the metadata")
            kind = cur.unpack("<I", "the metadata")
            if key == b"general.alignment" and kind == _UINT32:
                alignment = cur.unpack("<I", "the metadata")
                if alignment == 0 or alignment & (alignment - 1):
                    return f"header inconsistent: general.alignment {alignment} is not a " \
                           "power of two"
            else:
                problem = _skip_value(cur, kind, 0)
                if problem is not None:
                    return problem
        data_end = 0
        for _ in range(n_tensors):
            cur.skip_string("the tensor table")
            n_dims = cur.unpack("<I", "the tensor table")
            if not 1 <= n_dims <= MAX_DIMS:
                return f"header inconsistent: a tensor has {n_dims} dimensions"
            elements = 1
            for _ in range(n_dims):
                elements *= cur.unpack("<Q", "the tensor table")
            ggml_type = cur.unpack("<I", "the tensor table")
            offset = cur.unpack("<Q", "the tensor table")
            block = GGML_BLOCKS.get(ggml_type)
            nbytes = 0 if block is None else elements * block[1] // block[0]
            data_end = max(data_end, offset + nbytes)
    except _Truncated as exc:
        return f"truncated: the file ends inside {exc.what}"
    # The data section starts at the next alignment boundary (none without tensors).
    need = -(-cur.pos // alignment) * alignment + data_end if n_tensors else cur.pos
    if need > size:
        return f"truncated: the header needs {need} bytes, the file has {size}"
    return None


def _skip_value(cur: _Cursor, kind: int, depth: int) -> str | None:
    fixed = _FIXED.get(kind)
    if fixed is not None:
        cur.skip(fixed, "the metadata")
    elif kind == _STRING:
        cur.skip_string("the metadata")
    elif kind == _ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            return "header inconsistent: metadata arrays nested too deep"
        item = cur.unpack("<I", "the metadata")
        count = cur.unpack("<Q", "the metadata")
        item_size = _FIXED.get(item)
        if item_size is not None:
            cur.skip(count * item_size, "the metadata")
            return None
        if count * 8 > cur.left():  # every string or array item is at least 8 bytes
            raise _Truncated("the metadata")
        for _ in range(count):
            problem = _skip_value(cur, item, depth + 1)
            if problem is not None:
                return problem
    else:
        return f"header inconsistent: unknown metadata type {kind}"
    return None
