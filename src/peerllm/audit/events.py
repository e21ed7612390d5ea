"""One function per audit event: the fields of each event are fixed here, in one place.

Emitters call these rather than ``sink.record`` directly, so an event's field names are
one fact and mypy checks every call. Rules for every event: a ``client`` is the HTTP
client's ``host:port``, a ``peer`` a libp2p peer id (or a ``host:port`` before the peer
has proven one); ``outcome`` is ``"ok"``, ``"cancelled"`` or the error code the caller
got (``model_not_found``, ``busy``, ...). Never a token, a key, a prompt or a
completion: only their ids and counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from ..security_events import (
    AuditEvent,
    AuthFailure,
    Direction,
    PeerLimit,
    RateLimitScope,
    RecordKind,
)
from .sink import AuditSink

OK: Final = "ok"
CANCELLED: Final = "cancelled"  # the caller went away, or the deadline passed
ERROR: Final = "error"  # a failure with no error code of its own

ManagementAction = Literal["load", "unload", "warmup", "pull", "delete", "replicas"]
InferenceKind = Literal["generation", "embedding"]


# -- what peers do -----------------------------------------------------------------------

def network_key_mismatch(sink: AuditSink, *, peer: str, direction: Direction,
                         reason: str) -> None:
    """A connection was refused for another network: another private network key, or none."""
    sink.record(AuditEvent.NETWORK_KEY_MISMATCH, peer=peer, direction=direction,
                reason=reason)


def invalid_record(sink: AuditSink, *, kind: RecordKind, peer: str | None, key: str | None,
                   reason: str) -> None:
    """A signed record failed validation (forged, expired, malformed, wrong key).

    ``peer`` is who sent it when we know (None for a record libp2p hands us unattributed).
    """
    sink.record(AuditEvent.INVALID_RECORD, kind=kind, peer=peer, key=key, reason=reason)


def peer_limit(sink: AuditSink, *, peer: str, limit: PeerLimit) -> None:
    """A per-peer limit refused a peer's stream or call (the peer got a retryable busy)."""
    sink.record(AuditEvent.PEER_LIMIT, peer=peer, limit=limit)


# -- requests ----------------------------------------------------------------------------

def inference(sink: AuditSink, *, model: str | None, served_by: str | None,
              forwarded_by: str | None, client: str | None, subject: str | None,
              tokens_in: int | None, tokens_out: int | None, duration_ms: float,
              outcome: str, kind: InferenceKind = "generation") -> None:
    """One inference request, as the node that took it saw it.

    Our API's requests have ``client`` set and ``forwarded_by`` None; a peer's request
    served here has ``forwarded_by`` = that peer and ``client`` None. ``served_by`` is
    the node that answered (None when no node did); ``model`` is None only when the
    request body could not be read. Embeddings count ``tokens_in`` only.
    """
    sink.record(AuditEvent.INFERENCE, kind=kind, model=model, served_by=served_by,
                forwarded_by=forwarded_by, client=client, subject=subject,
                tokens_in=tokens_in, tokens_out=tokens_out,
                duration_ms=round(duration_ms, 1), outcome=outcome)


def model_management(sink: AuditSink, *, action: ManagementAction, model: str | None,
                     client: str | None, outcome: str, subject: str | None = None) -> None:
    """A load, unload, warmup, pull, delete or replica target asked through the API
    (``model`` None: an unreadable body)."""
    sink.record(AuditEvent.MODEL_MANAGEMENT, action=action, model=model, client=client,
                subject=subject, outcome=outcome)


# -- credentials (emitted by the auth layer) ---------------------------------------------

def auth_failure(sink: AuditSink, *, reason: AuthFailure, client: str | None,
                 token_id: str | None, route: str | None = None,
                 subject: str | None = None) -> None:
    """A request was refused for its credential (401/403): never log the token itself,
    only its id (``jti``) once the signature verified (else None)."""
    sink.record(AuditEvent.AUTH_FAILURE, reason=reason, client=client, token_id=token_id,
                route=route, subject=subject)


def rate_limited(sink: AuditSink, *, scope: RateLimitScope, subject: str | None,
                 token_id: str | None, client: str | None, retry_after_s: float | None,
                 forwarded_by: str | None = None) -> None:
    """A token's rate refused a request (429, or a busy refusal to a forwarding peer)."""
    sink.record(AuditEvent.RATE_LIMITED, scope=scope, subject=subject, token_id=token_id,
                client=client, forwarded_by=forwarded_by, retry_after_s=retry_after_s)


def token_created(sink: AuditSink, *, token_id: str, subject: str, roles: Sequence[str],
                  models: Sequence[str] | None, expires_at: float | None,
                  by: str | None) -> None:
    """A token was issued (``models`` None = all models; ``by`` = the issuing subject,
    or None from the local CLI)."""
    sink.record(AuditEvent.TOKEN_CREATED, token_id=token_id, subject=subject,
                roles=list(roles), models=None if models is None else list(models),
                expires_at=expires_at, by=by)


def token_revoked(sink: AuditSink, *, token_id: str, by: str | None,
                  subject: str | None = None) -> None:
    """A token was revoked here (or a revocation record from the mesh was accepted)."""
    sink.record(AuditEvent.TOKEN_REVOKED, token_id=token_id, subject=subject, by=by)
