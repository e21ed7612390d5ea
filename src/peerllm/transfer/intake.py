"""What happens to a chunk that arrives: checked, written, logged, hashed in order.

The checks and writes run in worker threads (BLAKE3 and pwrite of 4 MiB), so the event
loop keeps serving; the whole-file sha256 is fed in order under one lock (prefix.py).
"""

from __future__ import annotations

import trio

from ..wire.blob import Manifest, chunk_digest
from .partial import PartialFile
from .prefix import PrefixHash
from .rates import RateMeter


class Intake:
    """The verified chunks of one partial file and the sha256 of their prefix.

    ``partial.digests`` is written from worker threads: only look chunks up in it
    (``in``), never iterate it while chunks come in.
    """

    def __init__(self, partial: PartialFile, manifest: Manifest | None) -> None:
        self.partial = partial
        self.manifest = manifest
        self.meter = RateMeter()  # verified bytes, all sources together
        self.low = 0  # every chunk below is verified
        self._counted = set(partial.digests)  # verified and offered to the hash
        self.completed = partial.resumed_bytes  # verified bytes on disk
        self._hash = PrefixHash(partial.count, partial.read_chunk)
        self._lock = trio.Lock()
        self._advance()

    @property
    def complete(self) -> bool:
        return len(self.partial.digests) >= self.partial.count

    def has(self, index: int) -> bool:
        return index in self.partial.digests

    async def resume(self) -> None:
        """Hash the verified prefix already on disk (read once, on resume)."""
        async with self._lock:
            await trio.to_thread.run_sync(self._hash.catch_up, self.partial.digests)

    async def accept(self, index: int, data: bytes) -> bool:
        """Check chunk ``index`` and write it; False when it is not the chunk.

        Raises:
            OSError: our disk failed (not the source's fault).
        """
        if not await trio.to_thread.run_sync(self._check_write, index, data):
            return False
        if index not in self._counted:  # an endgame copy may have come in meanwhile
            self._counted.add(index)
            self.completed += len(data)
            self.meter.add(trio.current_time(), len(data))
            self._advance()
            async with self._lock:
                await trio.to_thread.run_sync(self._hash.offer, index, data,
                                              self.partial.digests)
        return True

    async def digest(self) -> str:
        """The whole file's sha256 (every chunk verified)."""
        await self.resume()
        return self._hash.digest()

    def _check_write(self, index: int, data: bytes) -> bool:
        """In a worker thread: check the chunk (BLAKE3), then write and log it."""
        if self.manifest is not None:
            if not self.manifest.check_chunk(index, data):
                return False
            digest = self.manifest.chunks[index]
        else:  # no manifest: nothing to check but the length; the file digest decides
            if len(data) != self.partial.span(index)[1]:
                return False
            digest = chunk_digest(data)
        self.partial.write_chunk(index, data, digest)
        return True

    def _advance(self) -> None:
        while self.low < self.partial.count and self.low in self.partial.digests:
            self.low += 1
