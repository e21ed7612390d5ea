"""The /peerllm/blob/1.0.0 protocol and model files' content addresses, sans-IO.

``manifest`` holds digests and manifests (shared by the protocol, the store and the
download engine). Import the names from here: ``from peerllm.wire import blob as wb``.
"""

from __future__ import annotations

from .manifest import (
    CHUNK_DIGEST_BYTES,
    DEFAULT_CHUNK_BYTES,
    DIGEST_PREFIX,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_FILE_BYTES,
    MIN_CHUNK_BYTES,
    Manifest,
    ManifestBuilder,
    ModelMeta,
    chunk_count,
    chunk_digest,
    digest_hex,
    is_digest,
    manifest_from_map,
    manifest_of,
    manifest_to_map,
    parse_digest,
    short_digest,
)

__all__ = [
    "CHUNK_DIGEST_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "DIGEST_PREFIX",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_FILE_BYTES",
    "MIN_CHUNK_BYTES",
    "Manifest",
    "ManifestBuilder",
    "ModelMeta",
    "chunk_count",
    "chunk_digest",
    "digest_hex",
    "is_digest",
    "manifest_from_map",
    "manifest_of",
    "manifest_to_map",
    "parse_digest",
    "short_digest",
]
