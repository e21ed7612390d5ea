"""The smallest GGUF file the node's header check accepts, for FakeBackend models."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

FAKE_GGUF: Final = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
"""A valid GGUF v3 header with no metadata and no tensors (24 bytes)."""


def write_fake_gguf(path: Path, size: int = 1024) -> Path:
    """Write ``FAKE_GGUF`` padded to ``size`` bytes (sparse: big sizes cost nothing)."""
    with path.open("wb") as fh:
        fh.write(FAKE_GGUF)
        fh.truncate(max(size, len(FAKE_GGUF)))
    return path
