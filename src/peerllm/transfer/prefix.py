"""The whole-file sha256, computed in order as the verified prefix grows.

Chunks are verified out of order (several sources at once), but sha256 only takes bytes
in order. A chunk that extends the prefix is hashed from memory at once; one that arrives
ahead is held in a bounded buffer, and read back from the partial file only if the
buffer was full when it arrived. So the file is never read a second time in full: on a
resume, only the verified prefix already on disk is read (once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container
from typing import Final

from ..wire.blob import DIGEST_PREFIX

MAX_HELD_CHUNKS: Final = 8
"""Chunks held ahead of the prefix: 32 MiB at the default chunk size."""


class PrefixHash:
    """sha256 of chunks 0..``next``-1. Blocking (hashing): call in a worker thread,
    one call at a time."""

    def __init__(self, count: int, read_chunk: Callable[[int], bytes], *,
                 max_held: int = MAX_HELD_CHUNKS) -> None:
        self.count = count
        self.next = 0
        self.read_back = 0  # chunks read from disk (resumed prefix, buffer overflow)
        self._read = read_chunk
        self._max_held = max_held
        self._held: dict[int, bytes] = {}
        self._sha = hashlib.sha256()

    def offer(self, index: int, data: bytes | None, verified: Container[int]) -> None:
        """Chunk ``index`` is verified (``data``: its bytes, or None to read them back
        when needed); hash every chunk the prefix now reaches."""
        if index > self.next and data is not None and len(self._held) < self._max_held:
            self._held[index] = data
        elif index == self.next:
            self._hash(index, data)
        self.catch_up(verified)

    def catch_up(self, verified: Container[int]) -> None:
        """Extend the prefix over the chunks in ``verified`` (reading back unheld ones)."""
        while self.next < self.count and self.next in verified:
            self._hash(self.next, self._held.pop(self.next, None))

    def _hash(self, index: int, data: bytes | None) -> None:
        if data is None:
            data = self._read(index)
            self.read_back += 1
        self._sha.update(data)
        self.next = index + 1

    @property
    def done(self) -> bool:
        return self.next >= self.count

    def digest(self) -> str:
        return DIGEST_PREFIX + self._sha.hexdigest()
