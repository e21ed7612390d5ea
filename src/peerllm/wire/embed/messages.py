"""The messages of /peerllm/embed/1.0.0 and its limits (frozen dataclasses).

The request limits are ``wire.limits`` (the API checks the same numbers); the error
frame is the infer protocol's ``Error``, byte for byte. See protocols/embed.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .. import limits
from ..infer.messages import MAX_AUTH_CHARS as MAX_AUTH_CHARS
from ..infer.messages import Error as Error

PROTOCOL_ID: Final = "/peerllm/embed/1.0.0"
PROTOCOL_VERSION: Final = 1
MAX_INPUTS: Final = limits.MAX_EMBED_INPUTS
MAX_CHARS: Final = limits.MAX_EMBED_CHARS
MAX_DIMS: Final = limits.MAX_EMBED_DIMS
MAX_VALUES: Final = limits.MAX_EMBED_VALUES
MAX_DEADLINE_MS: Final = limits.MAX_DEADLINE_MS
MAX_ID_LEN: Final = 256
"""``served_by`` and ``model`` of an answer."""
_SLACK: Final = 64 * 1024  # msgpack headers, ids and the auth JWT around the payload
MAX_REQUEST_FRAME_BYTES: Final = 4 * MAX_CHARS + 4 * MAX_INPUTS + _SLACK
"""Request frames: every request within the char limits fits, whatever its UTF-8."""
MAX_ANSWER_FRAME_BYTES: Final = 4 * MAX_VALUES + _SLACK
"""Answer frames: MAX_VALUES float32 plus the receipt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbedRequest:
    request_id: int
    """1..2**63-1, chosen by the client."""
    model: str
    """1..MAX_MODEL_ID_CHARS chars."""
    inputs: tuple[str, ...]
    """1..MAX_INPUTS strings, MAX_CHARS code points in all; one vector comes back per input."""
    deadline_ms: int
    """Budget in ms the server may spend, counted from when it reads the request."""
    auth: str | None = None
    """Optional: the forwarding node's delegation JWT, exactly as an infer request's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Embeddings:
    request_id: int
    served_by: str
    """Peer ID of the serving node."""
    model: str
    dims: int
    """Length of every vector, 1..MAX_DIMS."""
    vectors: bytes
    """count x dims little-endian IEEE-754 float32, input order (``pack_vectors``)."""
    prompt_tokens: int
    """Tokens the model read for all inputs together."""
    receipt: str | None = None
    """Optional: the server's signed receipt (tokens_in = prompt_tokens, tokens_out = 0)."""

    @property
    def count(self) -> int:
        return len(self.vectors) // (4 * self.dims)


Message = EmbedRequest | Embeddings | Error
