"""The names of security events, one fact each: audit event kinds and the bounded label sets.

The audit log (``peerllm.audit``), the metrics (``peerllm.metrics``) and the code that
refuses something (the API's auth, ``p2p``'s per-peer limits, the network-key check) all name
an event with these enums, so a reason or a limit is spelled once and a metric label can
only take one of the values listed here (a Prometheus label set must stay bounded).
Pure values: every layer may import them.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TypeAlias


class AuditEvent(StrEnum):
    """The ``event`` of an audit line. Fields of each are fixed by ``peerllm.audit.events``."""

    NETWORK_KEY_MISMATCH = "network_key_mismatch"  # refused: another network
    INVALID_RECORD = "invalid_record"  # a forged or invalid DHT record or signed node-info
    MODEL_MANAGEMENT = "model_management"  # load / unload / warmup / pull / delete / replicas (API)
    INFERENCE = "inference"  # one line per inference request, ours or a peer's
    PEER_LIMIT = "peer_limit"  # a per-peer limit refused a peer's stream or call
    AUTH_FAILURE = "auth_failure"  # a request without a usable credential (AuthFailure)
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    RATE_LIMITED = "rate_limited"  # a token's rate refused a request (RateLimitScope)
    SUPPRESSED = "suppressed"  # written by the log itself: lines dropped by flood control


class AuthFailure(StrEnum):
    """Why a request's credential was refused (label ``reason`` of the auth metric).

    The first five are 401 (who are you?), the last two 403 (you may not).
    """

    MISSING = "missing"
    MALFORMED = "malformed"
    FORGED = "forged"  # the signature does not verify (another key, or tampered)
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNTRUSTED_ISSUER = "untrusted_issuer"  # well formed and signed, by a key we do not trust
    FORBIDDEN_ROLE = "forbidden_role"
    FORBIDDEN_MODEL = "forbidden_model"


class RateLimitScope(StrEnum):
    """Which of a token's rates refused a request (label ``scope``)."""

    TOKEN_REQUESTS = "token_requests"  # requests per minute
    TOKEN_TOKENS = "token_tokens"  # tokens per minute


class PeerLimit(StrEnum):
    """Which per-peer limit of the libp2p side refused a peer (label ``limit``)."""

    STREAMS = "streams"  # concurrent inference streams per peer
    STREAM_RATE = "stream_rate"  # new inference streams per second per connection
    INFO_RATE = "info_rate"  # node-info requests per second


class RecordKind(StrEnum):
    """What kind of signed record failed validation (field ``kind`` of invalid_record)."""

    DHT = "dht"
    NODE_INFO = "node_info"


class Direction(StrEnum):
    """Who opened the connection a refusal for another network key was about."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


PeerLimitHook: TypeAlias = Callable[[str, PeerLimit], None]
"""(peer id, limit): called by p2p/ each time a per-peer limit refuses a peer.

The composition root (node.py) turns it into a metric and an audit line, so p2p/ needs
neither ``metrics`` (a sibling adapter) nor the audit log's fields.
"""
