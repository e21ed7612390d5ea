"""The messages of /peerllm/blob/1.0.0 and every limit of the protocol (frozen dataclasses).

One place for each number: the codec, the server and the client read them here. See
protocols/blob.md for the flow (describe, get, the side channel, in-stream chunks).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .. import limits
from .manifest import (
    CHUNK_DIGEST_BYTES,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    Manifest,
    ModelMeta,
    digest_problem,
    is_digest,
)

PROTOCOL_ID: Final = "/peerllm/blob/1.0.0"
PROTOCOL_VERSION: Final = 1

MAX_REF_CHARS: Final = limits.MAX_MODEL_ID_CHARS
"""A ref: a ``sha256:`` digest (71 chars) or a model id, optionally pinned ``id@<hex>``."""
MAX_RANGE_CHUNKS: Final = 64
"""Chunks one ``get`` may ask for: 256 MiB at the default 4 MiB chunk."""
MAX_REQUEST_FRAME_BYTES: Final = 4 * 1024
"""Client → server frames (describe, get, fallback): a ref and a few ints."""
MAX_ANSWER_FRAME_BYTES: Final = MAX_CHUNKS * CHUNK_DIGEST_BYTES + MAX_CHUNKS // 8 + 64 * 1024
"""Server → client frames: the largest manifest (4 MiB of chunk digests), its bitmap
(16 KiB) and 64 KiB for the meta, ids and msgpack headers."""
MAX_ERROR_MESSAGE_CHARS: Final = 1024
MAX_HOST_CHARS: Final = 64
"""An offer's host: an IPv4 or IPv6 literal (never a name to resolve)."""
MAX_META_CHARS: Final = 64
"""ModelMeta ``type`` and ``chat_format``."""
MAX_CONTEXT_SIZE: Final = 1 << 24
MAX_RETRY_AFTER_MS: Final = limits.MAX_DEADLINE_MS
TOKEN_BYTES: Final = 32
"""The side channel's one-time token (random, sent over the Noise stream only)."""
CERT_HASH_BYTES: Final = 32
"""SHA-256 of the side channel's DER certificate, pinned by the client."""
IN_STREAM_WRITE_BYTES: Final = 65_507
"""Most chunk bytes per libp2p write: a 12-byte yamux header plus this is 65,519 bytes,
Noise's largest message, so each write is one yamux frame in one Noise message
(../shared/notes/bulk-transfer-2026-12.md: ~1.5x the throughput of 1 MiB writes)."""
CHUNK_BYTES_LIMIT: Final = MAX_CHUNK_BYTES
"""Largest raw chunk after a ``chunk`` header (the manifest's chunk limit)."""

ERROR_CODES: Final = frozenset({"not_found", "refused", "busy", "bad_request", "internal"})
"""``not_found``: no such file here, or not those chunks (yet). ``refused``: this peer may
not download from us. ``busy``: too many streams or uploads now; ``retry_after_ms``.
``bad_request``: the client broke the protocol. ``internal``: our file changed or could
not be read (a retry may work once the catalog catches up)."""
RETRYABLE_CODES: Final = frozenset({"busy", "internal"})

_MODEL_REF: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}(?:@[0-9a-f]{8,64})?")


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not a digest or a model id (None when it is one).

    A model id has the config's form (letters, digits, ``._:/+-``, a letter or digit
    first) with an optional ``@<hex>`` pin, and never ``..`` or ``//``: a ref names a
    catalog entry, never a path, and these rules keep anything path-like out early.
    """
    if is_digest(ref):
        return None
    problem = digest_problem(ref)
    if problem is not None:
        return problem
    if not _MODEL_REF.fullmatch(ref):
        return "not a digest or a model id (letters, digits, ._:/+- and an optional @<hex>)"
    if ".." in ref or "//" in ref or ref.endswith("/"):
        return "a model id has no '..', '//' or trailing '/': refs are not paths"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Describe:
    """Client → server: what is the file ``ref`` names?"""

    ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Get:
    """Client → server: chunks ``first`` .. ``first + count - 1`` of ``ref``.

    ``chunk_bytes`` and ``size`` are the geometry the client expects (the server refuses
    a mismatch); ``side_channel`` says whether the client would dial one.
    """

    ref: str
    first: int
    count: int
    """1..MAX_RANGE_CHUNKS."""
    chunk_bytes: int
    size: int
    side_channel: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Fallback:
    """Client → server, after an ``offer``: I could not use the side channel; send the
    chunks in-stream instead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Described:
    """Server → client: the manifest, the model it is (if one), and which chunks we have
    (None = all; a node still downloading sends its bitmap)."""

    manifest: Manifest
    meta: ModelMeta | None = None
    have: bytes | None = None
    """ceil(count / 8) bytes, chunk ``i`` is bit ``i % 8`` (LSB first) of byte ``i // 8``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """Server → client: dial ``host:port``, run TLS 1.3 pinned to ``cert_sha256``, send
    ``token`` first, then read the chunks. ``host`` "" means: the address you reach me at."""

    host: str
    port: int
    cert_sha256: bytes
    token: bytes = b""

    def __repr__(self) -> str:  # the token is a secret: never in logs or tracebacks
        return f"Offer(host={self.host!r}, port={self.port}, cert_sha256={self.cert_sha256.hex()})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkHeader:
    """Server → client, in-stream: ``length`` raw bytes of chunk ``index`` follow."""

    index: int
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """Server → client: the range is complete (``chunks`` sent, by either path)."""

    chunks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """Server → client: the request failed; ``code`` is one of ERROR_CODES."""

    code: str
    message: str
    retry_after_ms: int | None = None

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk's raw bytes as the client's decoder assembled them (not a frame)."""

    index: int
    data: bytes


Request = Describe | Get | Fallback
Answer = Described | Offer | ChunkHeader | Done | Error
Message = Request | Answer


def bitmap_of(count: int, have: Callable[[int], bool]) -> bytes:
    """The ``have`` bitmap of ``count`` chunks from a predicate ``have(i) -> bool``."""
    out = bytearray(-(-count // 8))
    for i in range(count):
        if have(i):
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def bitmap_has(bitmap: bytes, index: int) -> bool:
    return bool(bitmap[index >> 3] >> (index & 7) & 1)
