"""Conversation digests: the name a node advertises for a chat whose KV cache it holds.

A serving node that keeps a finished chat turn's tokens in a batch slot advertises the
digest of that conversation (the request's messages plus the answer it gave) in its
node-info (``ModelInfo.prefixes``); a router holding the next turn computes the digest
of everything but the new user message and prefers the node advertising it, whose slot
then reuses the prefix instead of prefilling it. Both ends call the one function here,
so the encoding is defined once (protocols/node-info.md, "Conversation prefixes").

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from .framing import pack

PREFIX_DIGEST_BYTES: Final = 8
"""Digest length: 2^64 names; a collision only costs one request a missed reuse."""
MAX_PREFIXES: Final = 16
"""The most digests one ModelInfo may carry (node-info stays far below its frame cap)."""
_PERSON: Final = b"peerllm/prefix1"  # blake2b personalisation: this use of the hash only


def conversation_digest(model_id: str, messages: Sequence[tuple[str, str]]) -> bytes:
    """The PREFIX_DIGEST_BYTES-byte digest of a conversation with ``model_id``.

    ``messages`` are (role, content) pairs in order. The digest is blake2b over the
    msgpack of ``[model_id, [[role, content], ...]]``, so it changes with any byte of
    any turn, with their order, and with the model id exactly as the request named it.
    """
    canonical = pack([model_id, [[role, content] for role, content in messages]])
    return hashlib.blake2b(canonical, digest_size=PREFIX_DIGEST_BYTES,
                           person=_PERSON).digest()
