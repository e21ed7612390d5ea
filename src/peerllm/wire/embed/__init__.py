"""The /peerllm/embed/1.0.0 protocol, sans-IO: messages, codec, one side of a stream.

One libp2p stream carries one request and its answer (protocols/embed.md)::

    client                                   server
    EmbedRequest  ───────────────────────▶
                  ◀───────────────────────  Embeddings | Error

Import the names from here: ``from peerllm.wire import embed as we``.
"""

from __future__ import annotations

from .codec import message_from_map, message_to_map
from .messages import (
    MAX_ANSWER_FRAME_BYTES,
    MAX_CHARS,
    MAX_DEADLINE_MS,
    MAX_DIMS,
    MAX_INPUTS,
    MAX_REQUEST_FRAME_BYTES,
    MAX_VALUES,
    PROTOCOL_ID,
    PROTOCOL_VERSION,
    Embeddings,
    EmbedRequest,
    Error,
    Message,
)
from .state import ClientSide, ServerSide
from .vectors import pack_vectors, unpack_vectors

__all__ = [
    "MAX_ANSWER_FRAME_BYTES",
    "MAX_CHARS",
    "MAX_DEADLINE_MS",
    "MAX_DIMS",
    "MAX_INPUTS",
    "MAX_REQUEST_FRAME_BYTES",
    "MAX_VALUES",
    "PROTOCOL_ID",
    "PROTOCOL_VERSION",
    "ClientSide",
    "EmbedRequest",
    "Embeddings",
    "Error",
    "Message",
    "ServerSide",
    "message_from_map",
    "message_to_map",
    "pack_vectors",
    "unpack_vectors",
]
