"""The /peerllm/infer/1.0.0 protocol, sans-IO: messages, codec, stream state machine.

One libp2p stream carries one request, or several one after another when both ends
agree to reuse it (``reuse`` in the request and in Accepted; protocols/inference.md)::

    client                                   server
    InferRequest  ───────────────────────▶
                  ◀───────────────────────  Accepted | Error
                  ◀───────────────────────  Tokens*            (each may hold many tokens)
    Cancel?       ───────────────────────▶
                  ◀───────────────────────  Done | Error

The rooms, as h11 splits ``_events`` / ``_readers`` / ``_state`` / ``_connection``:
``messages`` (constants and frozen dataclasses), ``codec`` (``message_to_map`` /
``message_from_map``, strict on both ends), ``state`` (``ClientStream`` and
``ServerStream``: ``send(msg) -> bytes``, ``receive_data(bytes)``, ``next_event()``,
checked against ``TRANSITIONS``) and ``coalescer`` (``TokenCoalescer`` merges tokens
produced while a write is in flight into as few ``Tokens`` frames as the limits allow).
Import the names from here: ``from peerllm.wire import infer as wi``.
"""

from __future__ import annotations

from ..load import Load
from .coalescer import (
    TokenCoalescer,
)
from .codec import (
    error_for_violation,
    message_from_map,
    message_to_map,
)
from .messages import (
    DEFAULT_RETRYABLE,
    ERROR_CODES,
    FINISH_REASONS,
    MAX_AUTH_CHARS,
    MAX_CODE_LEN,
    MAX_DEADLINE_MS,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ID_LEN,
    MAX_INFER_FRAME_BYTES,
    MAX_JSON_SCHEMA_CHARS,
    MAX_LOAD_COUNT,
    MAX_LOGIT_BIAS,
    MAX_LOGIT_BIAS_VALUE,
    MAX_MESSAGES,
    MAX_PENALTY,
    MAX_PROMPT_CHARS,
    MAX_REPEAT_PENALTY,
    MAX_STOP,
    MAX_STOP_CHARS,
    MAX_TEMPERATURE,
    MAX_TOKEN_ID,
    MAX_TOKEN_TEXT_CHARS,
    MAX_TOKENS_CAP,
    MAX_TOP_K,
    PROTOCOL_ID,
    PROTOCOL_VERSION,
    REUSE_CLIENT_IDLE_S,
    REUSE_IDLE_S,
    ROLES,
    Accepted,
    Cancel,
    ChatTurn,
    Done,
    Error,
    InferRequest,
    Message,
    Sampling,
    Tokens,
)
from .state import (
    AWAIT_ACCEPT,
    CLIENT,
    ERROR,
    FINISHED,
    IDLE,
    REJECTING,
    SERVER,
    STREAMING,
    TRANSITIONS,
    ClientStream,
    InferStream,
    Role,
    ServerStream,
    State,
)

__all__ = [
    "AWAIT_ACCEPT",
    "CLIENT",
    "DEFAULT_RETRYABLE",
    "ERROR",
    "ERROR_CODES",
    "FINISHED",
    "FINISH_REASONS",
    "IDLE",
    "MAX_AUTH_CHARS",
    "MAX_CODE_LEN",
    "MAX_DEADLINE_MS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_ID_LEN",
    "MAX_INFER_FRAME_BYTES",
    "MAX_JSON_SCHEMA_CHARS",
    "MAX_LOAD_COUNT",
    "MAX_LOGIT_BIAS",
    "MAX_LOGIT_BIAS_VALUE",
    "MAX_MESSAGES",
    "MAX_PENALTY",
    "MAX_PROMPT_CHARS",
    "MAX_REPEAT_PENALTY",
    "MAX_STOP",
    "MAX_STOP_CHARS",
    "MAX_TEMPERATURE",
    "MAX_TOKENS_CAP",
    "MAX_TOKEN_ID",
    "MAX_TOKEN_TEXT_CHARS",
    "MAX_TOP_K",
    "PROTOCOL_ID",
    "PROTOCOL_VERSION",
    "REJECTING",
    "REUSE_CLIENT_IDLE_S",
    "REUSE_IDLE_S",
    "ROLES",
    "SERVER",
    "STREAMING",
    "TRANSITIONS",
    "Accepted",
    "Cancel",
    "ChatTurn",
    "ClientStream",
    "Done",
    "Error",
    "InferRequest",
    "InferStream",
    "Load",
    "Message",
    "Role",
    "Sampling",
    "ServerStream",
    "State",
    "TokenCoalescer",
    "Tokens",
    "error_for_violation",
    "message_from_map",
    "message_to_map",
]
