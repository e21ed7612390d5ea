"""Embedding vectors to and from the answer frame's bytes (little-endian float32)."""

from __future__ import annotations

import struct
from collections.abc import Sequence


def pack_vectors(vectors: Sequence[Sequence[float]]) -> tuple[int, bytes]:
    """(dims, bytes) of equally long ``vectors``.

    Raises:
        ValueError: no vectors, an empty vector, or vectors of different lengths.
    """
    if not vectors or not vectors[0]:
        raise ValueError("vectors: expected at least one non-empty vector")
    dims = len(vectors[0])
    if any(len(v) != dims for v in vectors):
        raise ValueError(f"vectors: every vector must have {dims} values")
    flat = [x for v in vectors for x in v]
    return dims, struct.pack(f"<{len(flat)}f", *flat)


def unpack_vectors(data: bytes, dims: int) -> list[list[float]]:
    """The vectors ``pack_vectors`` packed (each value rounded to float32)."""
    flat = struct.unpack(f"<{len(data) // 4}f", data)
    return [list(flat[i:i + dims]) for i in range(0, len(flat), dims)]
