"""One table for every inference error: exception ↔ wire error code ↔ HTTP status.

The wire codec (the codes it sends and their default ``retryable``), the serving side
(our engine's exceptions → an error frame) and the API (a refusal → an HTTP status)
all read it here, so a code means the same thing on every path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .errors import (
    AuthError,
    InferenceCancelled,
    InferenceError,
    InferenceRejected,
    InferenceTimeout,
    InvalidInferenceRequest,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
)


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """What one wire error code means."""

    code: str
    http_status: int
    retryable: bool
    """Whether another attempt (later, or on another peer) may succeed."""


ERROR_KINDS: Final[Mapping[str, ErrorKind]] = {k.code: k for k in (
    ErrorKind("model_not_found", 404, retryable=False),
    ErrorKind("bad_request", 400, retryable=False),
    ErrorKind("too_large", 400, retryable=False),
    ErrorKind("busy", 503, retryable=True),
    ErrorKind("too_many_streams", 503, retryable=True),
    ErrorKind("timeout", 504, retryable=True),
    # Another replica may well succeed (a model that failed to load here, say).
    ErrorKind("internal", 503, retryable=True),
    ErrorKind("cancelled", 502, retryable=False),
    # Refusals about who asks, not about the server's health (protocols/auth.md): the
    # credential will not get better by retrying here, but another replica may decide
    # otherwise (it may trust other issuers); over a rate, later may work.
    ErrorKind("unauthorized", 401, retryable=False),
    ErrorKind("forbidden", 403, retryable=False),
    ErrorKind("rate_limited", 429, retryable=True),
)}

BUSY_CODES: Final = frozenset({"busy", "too_many_streams"})
"""A healthy peer with no room right now: never a breaker failure."""

REFUSAL_CODES: Final = frozenset({"unauthorized", "forbidden", "rate_limited"})
"""A healthy peer that will not serve this caller: never a breaker failure; the router
tries another replica and, when none takes it, answers with the refusal."""

_REFUSAL_OF_STATUS: Final = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}

# Our engine's exceptions, most specific first.
_CODE_OF: Final[tuple[tuple[type[InferenceError], str], ...]] = (
    (ModelNotFound, "model_not_found"),
    (ModelBusy, "busy"),
    (InvalidInferenceRequest, "bad_request"),
    (InferenceTimeout, "timeout"),
    (InferenceCancelled, "busy"),  # shutting down or unloaded: another replica may take it
    (ModelLoadError, "internal"),
)


def http_status(code: str, *, retryable: bool) -> int:
    """The HTTP status for a refusal with wire ``code`` (an unknown code: 503 if
    retrying may help, else 502)."""
    kind = ERROR_KINDS.get(code)
    if kind is not None:
        return kind.http_status
    return 503 if retryable else 502


def rejection(exc: InferenceError) -> InferenceRejected:
    """The refusal a caller (a peer, or our own router) gets for our engine's ``exc``."""
    code = next((c for kind, c in _CODE_OF if isinstance(exc, kind)), "internal")
    message = str(exc) if code != "internal" or isinstance(exc, ModelLoadError) \
        else f"{type(exc).__name__}: {exc}"
    return InferenceRejected(code, message, retryable=ERROR_KINDS[code].retryable,
                             retry_after_s=exc.retry_after_s if isinstance(exc, ModelBusy)
                             else None)


def auth_rejection(exc: AuthError) -> InferenceRejected:
    """The refusal a peer gets for a forwarded request that ``exc`` refuses; the message
    starts with the reason (``revoked: ...``)."""
    code = _REFUSAL_OF_STATUS.get(exc.status, "forbidden")
    return InferenceRejected(code, str(exc), retryable=ERROR_KINDS[code].retryable,
                             retry_after_s=exc.retry_after_s)
