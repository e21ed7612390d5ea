"""A download in progress on disk: ``<target>.partial`` and its crash-safe state.

Chunks are written at their offsets into the partial file (sparse until complete). The
state file next to it (``<target>.partial.state``) is one JSON header line (size, chunk
size, the expected digest and the manifest when known) followed by an append-only log of
fixed-size records ``<index:8 hex> <chunk BLAKE3:64 hex>\\n``, one per verified chunk,
written right after that chunk's bytes. A kill -9 therefore loses at most the chunks in
flight; a torn last record is ignored. Nothing is fsynced per chunk: a process crash
keeps the page cache, and a power loss costs at most a re-download (the whole-file
sha256 is checked before anything is installed).

All methods block (file I/O): the swarm calls them in worker threads.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Final

from ..errors import DigestMismatch, NotEnoughSpace
from ..wire.blob import CHUNK_DIGEST_BYTES, Manifest, chunk_count
from .digests import manifest_from_json, manifest_to_json

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX: Final = ".partial"
STATE_SUFFIX: Final = ".state"
STATE_VERSION: Final = 1
SPACE_MARGIN_BYTES: Final = 16 * 1024 * 1024
"""Kept free beyond the file's missing bytes: the state log, documents, other writers."""
_RECORD: Final = re.compile(rb"([0-9a-f]{8}) ([0-9a-f]{64})\n")
RECORD_BYTES: Final = 8 + 1 + 2 * CHUNK_DIGEST_BYTES + 1


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


def state_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX + STATE_SUFFIX)


def span(size: int, chunk_bytes: int, index: int) -> tuple[int, int]:
    """(offset, length) of chunk ``index`` of a ``size``-byte file."""
    offset = index * chunk_bytes
    return offset, min(chunk_bytes, size - offset)


class PartialFile:
    """An open partial file: which chunks are on disk, verified, and their BLAKE3s.

    ``open_partial`` makes one (resuming what is there when it is the same file).
    """

    def __init__(self, target: Path, *, size: int, chunk_bytes: int, expected: str | None,
                 manifest: Manifest | None, verified: dict[int, bytes]) -> None:
        self.target = target
        self.path = partial_path(target)
        self.state = state_path(target)
        self.size = size
        self.chunk_bytes = chunk_bytes
        self.count = chunk_count(size, chunk_bytes)
        self.expected = expected
        self.manifest = manifest
        self.digests = verified  # index -> BLAKE3 of the verified chunk on disk
        self.resumed_bytes = sum(self.span(i)[1] for i in verified)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._log = -1
        self._rewrite_state()

    def span(self, index: int) -> tuple[int, int]:
        return span(self.size, self.chunk_bytes, index)

    def missing_bytes(self) -> int:
        return self.size - sum(self.span(i)[1] for i in self.digests)

    def check_space(self, free: int) -> None:
        """Raises NotEnoughSpace when ``free`` bytes cannot hold the missing chunks."""
        needed = self.missing_bytes() + SPACE_MARGIN_BYTES
        if free < needed:
            raise NotEnoughSpace(self.target, needed, free)

    def write_chunk(self, index: int, data: bytes, digest: bytes) -> None:
        """Write a verified chunk at its offset, then log it (in that order)."""
        offset, length = self.span(index)
        if len(data) != length:  # ours: the caller checked the chunk
            raise ValueError(f"chunk {index}: {len(data)} bytes, expected {length}")
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n
        os.write(self._log, _record(index, digest))
        self.digests[index] = digest

    def read_chunk(self, index: int) -> bytes:
        offset, length = self.span(index)
        return os.pread(self._fd, length, offset)

    def install(self, actual: str) -> None:
        """fsync, check ``actual`` against the expected digest, rename into place.

        Raises:
            DigestMismatch: the partial is removed, nothing is installed.
        """
        want = self.manifest.digest if self.manifest is not None else self.expected
        if want is not None and actual != want:
            self.discard()
            raise DigestMismatch(want, actual)
        os.fsync(self._fd)
        self.close()
        os.replace(self.path, self.target)
        _fsync_dir(self.target.parent)
        self.state.unlink(missing_ok=True)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in (self._fd, self._log):
            if fd >= 0:
                os.close(fd)
        self._fd = self._log = -1

    def _rewrite_state(self) -> None:
        """Header plus the records we trust, atomically; then append to it."""
        if self._log >= 0:
            os.close(self._log)
        header = {"version": STATE_VERSION, "size": self.size, "chunk_bytes": self.chunk_bytes,
                  "expected": self.expected,
                  "manifest": manifest_to_json(self.manifest) if self.manifest else None}
        body = json.dumps(header).encode() + b"\n" + b"".join(
            _record(i, d) for i, d in sorted(self.digests.items()))
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, self.state)
        self._log = os.open(self.state, os.O_WRONLY | os.O_APPEND)


def open_partial(target: Path, *, size: int, chunk_bytes: int, expected: str | None,
                 manifest: Manifest | None) -> PartialFile:
    """The partial of ``target``: resumed when its state says it is this same file,
    otherwise started afresh (the old one discarded, logged)."""
    verified: dict[int, bytes] = {}
    found = _read_state(target)
    if found is not None:
        header, records = found
        problem = _mismatch(header, size=size, chunk_bytes=chunk_bytes, expected=expected,
                            manifest=manifest)
        if problem is not None:
            logger.info("discarding the partial download of %s: %s", target.name, problem)
        else:
            if manifest is None and header.manifest is not None:
                manifest = header.manifest
            verified = _trusted(target, records, size=size, chunk_bytes=chunk_bytes,
                                manifest=manifest)
            if verified:
                logger.info("resuming %s: %d chunks already on disk", target.name,
                            len(verified))
    if not verified:
        partial_path(target).unlink(missing_ok=True)
    return PartialFile(target, size=size, chunk_bytes=chunk_bytes, expected=expected,
                       manifest=manifest, verified=verified)


class _Header:
    def __init__(self, size: int, chunk_bytes: int, expected: str | None,
                 manifest: Manifest | None) -> None:
        self.size, self.chunk_bytes = size, chunk_bytes
        self.expected, self.manifest = expected, manifest


def _read_state(target: Path) -> tuple[_Header, dict[int, bytes]] | None:
    try:
        raw = state_path(target).read_bytes()
    except FileNotFoundError:
        return None
    first, _, rest = raw.partition(b"\n")
    try:
        header = _parse_header(json.loads(first))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring the corrupt download state %s: %s", state_path(target), exc)
        return None
    records: dict[int, bytes] = {}
    for pos in range(0, len(rest) - RECORD_BYTES + 1, RECORD_BYTES):
        match = _RECORD.fullmatch(rest[pos:pos + RECORD_BYTES])
        if match is None:  # a torn or garbled record: trust nothing after it
            break
        records[int(match.group(1), 16)] = bytes.fromhex(match.group(2).decode())
    return header, records


def _parse_header(doc: dict[str, object]) -> _Header:
    if doc.get("version") != STATE_VERSION:
        raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
    size, chunk_bytes, expected = doc["size"], doc["chunk_bytes"], doc.get("expected")
    if not isinstance(size, int) or not isinstance(chunk_bytes, int) \
            or not isinstance(expected, (str, type(None))):
        raise TypeError("size, chunk_bytes or expected has the wrong type")
    m = doc.get("manifest")
    return _Header(size, chunk_bytes, expected, manifest_from_json(m) if m is not None else None)


def _mismatch(header: _Header, *, size: int, chunk_bytes: int, expected: str | None,
              manifest: Manifest | None) -> str | None:
    if (header.size, header.chunk_bytes) != (size, chunk_bytes):
        return f"it was for {header.size} bytes in {header.chunk_bytes}-byte chunks"
    if expected is not None and header.expected not in (None, expected):
        return f"it was for {header.expected}"
    if manifest is not None and header.manifest is not None and manifest != header.manifest:
        return "its manifest differs from the one expected now"
    if expected is not None and header.manifest is not None \
            and header.manifest.digest != expected:
        return f"its manifest is for {header.manifest.digest}"
    return None


def _trusted(target: Path, records: dict[int, bytes], *, size: int, chunk_bytes: int,
             manifest: Manifest | None) -> dict[int, bytes]:
    """Records whose bytes are on disk (size check) and agree with the manifest."""
    try:
        on_disk = partial_path(target).stat().st_size
    except FileNotFoundError:
        return {}
    count = chunk_count(size, chunk_bytes)
    out: dict[int, bytes] = {}
    for index, digest in records.items():
        if index >= count:
            continue
        offset, length = span(size, chunk_bytes, index)
        if offset + length > on_disk:
            continue
        if manifest is not None and manifest.chunks[index] != digest:
            continue
        out[index] = digest
    return out


def _record(index: int, digest: bytes) -> bytes:
    return f"{index:08x} {digest.hex()}\n".encode()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename stands
        pass
    finally:
        os.close(fd)

