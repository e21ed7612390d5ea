"""A blob catalog over a fixed set of files, for protocol tests and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..p2p.blob import BlobEntry
from ..wire import blob as wb


def blob_entry(path: Path, *, model_id: str | None = None,
               chunk_bytes: int = wb.DEFAULT_CHUNK_BYTES,
               have: Callable[[int], bool] | None = None) -> BlobEntry:
    """The entry of the file at ``path`` as it is now (reads it once, blocking)."""
    builder = wb.ManifestBuilder(chunk_bytes)
    with path.open("rb") as f:
        while block := f.read(8 * 1024 * 1024):
            builder.update(block)
    meta = None if model_id is None else wb.ModelMeta(id=model_id)
    return BlobEntry(manifest=builder.finish(), path=path, meta=meta, have=have)


class StaticBlobCatalog:
    """A ``BlobCatalog`` of fixed entries, found by digest or model id; ``asked`` lists
    every ref looked up, in order."""

    def __init__(self, entries: Iterable[BlobEntry] = ()) -> None:
        self.entries = list(entries)
        self.asked: list[str] = []

    def lookup(self, ref: str) -> BlobEntry | None:
        self.asked.append(ref)
        for entry in self.entries:
            if ref == entry.manifest.digest or (entry.meta is not None and ref == entry.meta.id):
                return entry
        return None
