"""Content addresses of model files: ``sha256:<hex>`` digests and per-chunk manifests.

A model file is named by the sha256 of its bytes (as Ollama shows digests). Its manifest
cuts it into equal chunks (the last one shorter) and names each by its BLAKE3 hash, so a
chunk from any source is checked before it is written; the whole-file sha256 is checked
once at the end. BLAKE3 for chunks because it costs ~0.2 CPU s/GB here against sha256's
~0.8 (../shared/notes/bulk-transfer-2026-12.md), and every byte is hashed by both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import blake3

from .._fields import FieldError, check_bytes, check_int, check_str

DIGEST_PREFIX: Final = "sha256:"
DIGEST_HEX_LEN: Final = 64
CHUNK_DIGEST_BYTES: Final = 32
DEFAULT_CHUNK_BYTES: Final = 4 * 1024 * 1024
MIN_CHUNK_BYTES: Final = 64 * 1024
MAX_CHUNK_BYTES: Final = 64 * 1024 * 1024
MAX_CHUNKS: Final = 1 << 17
"""512 GiB at the default chunk size; a manifest is then at most ~4.2 MB of digests."""
MAX_FILE_BYTES: Final = MAX_CHUNKS * DEFAULT_CHUNK_BYTES

_DIGEST: Final = re.compile(r"(?:sha256[:\-])?([0-9a-fA-F]{64})")


def parse_digest(text: str) -> str:
    """``sha256:<64 lowercase hex>`` from ``sha256:…``, ``sha256-…`` or bare hex.

    Raises:
        ValueError: not a sha256 digest (the message shows the expected form).
    """
    match = _DIGEST.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{str(text)[:80]!r} is not a digest; expected sha256:<64 hex digits>")
    return DIGEST_PREFIX + match.group(1).lower()


def is_digest(text: str) -> bool:
    """True when ``text`` reads as a sha256 digest (``parse_digest`` accepts it)."""
    try:
        parse_digest(text)
    except ValueError:
        return False
    return True


def prefixed_digest(ref: str) -> str | None:
    """The canonical digest when ``ref`` is written ``sha256:…`` or ``sha256-…`` (as refs
    name files by digest); None for anything else, a model id included."""
    return parse_digest(ref) if ref[:6].lower() == "sha256" and is_digest(ref) else None


def digest_problem(text: str) -> str | None:
    """Why ``text``, written as a digest (``sha256:`` first), is not one; None otherwise.

    ``sha256-…`` that is not a digest stays a model id (``sha256-<12 hex>`` is the id of a
    pulled file nobody named)."""
    if text[:len(DIGEST_PREFIX)].lower() == DIGEST_PREFIX and not is_digest(text):
        return f"a digest is {DIGEST_PREFIX}<{DIGEST_HEX_LEN} hex digits>"
    return None


def digest_hex(digest: str) -> str:
    """The 64 hex digits of a ``sha256:…`` digest."""
    return parse_digest(digest)[len(DIGEST_PREFIX):]


def short_digest(digest: str, length: int = 12) -> str:
    """The first ``length`` hex digits, as a model version tag shows them."""
    return digest_hex(digest)[:length]


def chunk_digest(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte BLAKE3 hash a manifest lists for a chunk."""
    return blake3.blake3(data).digest()


def chunk_count(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes)) if size else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A model file's size, sha256 digest and the BLAKE3 digest of each chunk.

    Validated on construction (ValueError): the chunk list fits the size.
    """

    digest: str
    size: int
    chunk_bytes: int
    chunks: tuple[bytes, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", parse_digest(self.digest))
        if not 0 <= self.size <= MAX_FILE_BYTES:
            raise ValueError(f"size: {self.size} outside 0..{MAX_FILE_BYTES}")
        if not MIN_CHUNK_BYTES <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes: {self.chunk_bytes} outside "
                             f"{MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}")
        want = chunk_count(self.size, self.chunk_bytes)
        if want > MAX_CHUNKS:
            raise ValueError(f"{want} chunks, more than {MAX_CHUNKS}")
        if len(self.chunks) != want:
            raise ValueError(f"chunks: {len(self.chunks)} digests for {want} chunks")
        if any(len(c) != CHUNK_DIGEST_BYTES for c in self.chunks):
            raise ValueError(f"chunks: every digest is {CHUNK_DIGEST_BYTES} bytes")

    @property
    def count(self) -> int:
        return len(self.chunks)

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index``.

        Raises:
            IndexError: no such chunk.
        """
        if not 0 <= index < len(self.chunks):
            raise IndexError(f"chunk {index} outside 0..{len(self.chunks) - 1}")
        offset = index * self.chunk_bytes
        return offset, min(self.chunk_bytes, self.size - offset)

    def check_chunk(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` is exactly chunk ``index``."""
        _, length = self.span(index)
        return len(data) == length and chunk_digest(data) == self.chunks[index]


class ManifestBuilder:
    """Builds a file's manifest from its bytes in order, in one pass (sha256 and BLAKE3)."""

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self._file = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._pending = bytearray()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._file.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            if not self._pending and len(view) >= self.chunk_bytes:
                self._chunks.append(chunk_digest(view[:self.chunk_bytes]))
                view = view[self.chunk_bytes:]
                continue
            take = min(len(view), self.chunk_bytes - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == self.chunk_bytes:
                self._chunks.append(chunk_digest(self._pending))
                self._pending.clear()

    def finish(self) -> Manifest:
        chunks = list(self._chunks)
        if self._pending:
            chunks.append(chunk_digest(self._pending))
        return Manifest(digest=DIGEST_PREFIX + self._file.hexdigest(), size=self.size,
                        chunk_bytes=self.chunk_bytes, chunks=tuple(chunks))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelMeta:
    """What a node that pulls a model file needs to serve it as its holder does."""

    id: str
    type: str = "llm"  # "llm" or "embedding"
    chat_format: str | None = None  # llama-cpp-python name; None = the GGUF's own template
    context_size: int | None = None


def manifest_of(data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Manifest:
    """The manifest of ``data`` held in memory (tests and small files)."""
    builder = ManifestBuilder(chunk_bytes)
    builder.update(data)
    return builder.finish()


def manifest_to_map(m: Manifest) -> dict[str, Any]:
    """The manifest's msgpack/JSON-able form: chunk digests concatenated in one bytes."""
    return {"digest": m.digest, "size": m.size, "chunk_bytes": m.chunk_bytes,
            "chunks": b"".join(m.chunks)}


def manifest_from_map(data: Mapping[str, Any], path: str = "manifest") -> Manifest:
    """Raises FieldError naming the field (``manifest.chunks``...)."""
    if not isinstance(data, Mapping):
        raise FieldError(path, f"expected a map, got {type(data).__name__}")
    digest = check_str(data.get("digest"), f"{path}.digest", max_len=80)
    size = check_int(data.get("size"), f"{path}.size", hi=MAX_FILE_BYTES)
    chunk_bytes = check_int(data.get("chunk_bytes"), f"{path}.chunk_bytes",
                            lo=MIN_CHUNK_BYTES, hi=MAX_CHUNK_BYTES)
    raw = check_bytes(data.get("chunks"), f"{path}.chunks",
                      max_len=MAX_CHUNKS * CHUNK_DIGEST_BYTES)
    if len(raw) % CHUNK_DIGEST_BYTES:
        raise FieldError(f"{path}.chunks", f"length {len(raw)} is not a multiple of "
                         f"{CHUNK_DIGEST_BYTES}")
    chunks = tuple(raw[i:i + CHUNK_DIGEST_BYTES] for i in range(0, len(raw), CHUNK_DIGEST_BYTES))
    try:
        return Manifest(digest=digest, size=size, chunk_bytes=chunk_bytes, chunks=chunks)
    except ValueError as exc:
        raise FieldError(path, str(exc)) from None
