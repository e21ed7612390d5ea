"""Why a request was refused: one bounded set of reasons (HTTP status, audit, metrics)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from ..security_events import AuthFailure, RateLimitScope

_F = AuthFailure


class Reason(StrEnum):
    """The reason of an ``AuthError``. Credential refusals are spelled as the metric's
    ``AuthFailure`` labels (one fact); ``scope_of`` maps the rate ones to theirs."""

    MISSING = _F.MISSING.value  # no Authorization header where one is required
    MALFORMED = _F.MALFORMED.value  # not a bearer JWT we can parse
    FORGED = _F.FORGED.value  # the signature does not verify
    EXPIRED = _F.EXPIRED.value
    REVOKED = _F.REVOKED.value
    UNTRUSTED_ISSUER = _F.UNTRUSTED_ISSUER.value
    FORBIDDEN_ROLE = _F.FORBIDDEN_ROLE.value
    FORBIDDEN_MODEL = _F.FORBIDDEN_MODEL.value
    RATE_LIMITED = "rate_limited"  # requests per minute
    TOKENS_LIMITED = "tokens_limited"  # tokens per minute
    UNTRUSTED_PEER = "untrusted_peer"  # a peer outside p2p.serve_peers: trusted
    BAD_DELEGATION = "bad_delegation"  # a forwarded request's proof does not hold


STATUS: Final[dict[Reason, int]] = {
    **{r: 401 for r in (Reason.MISSING, Reason.MALFORMED, Reason.FORGED, Reason.EXPIRED,
                        Reason.REVOKED, Reason.UNTRUSTED_ISSUER, Reason.BAD_DELEGATION)},
    Reason.FORBIDDEN_ROLE: 403, Reason.FORBIDDEN_MODEL: 403, Reason.UNTRUSTED_PEER: 403,
    Reason.RATE_LIMITED: 429, Reason.TOKENS_LIMITED: 429,
}
"""The HTTP status of each reason (the wire code of a refused peer request is the reason)."""

RATE_SCOPES: Final[dict[Reason, RateLimitScope]] = {
    Reason.RATE_LIMITED: RateLimitScope.TOKEN_REQUESTS,
    Reason.TOKENS_LIMITED: RateLimitScope.TOKEN_TOKENS,
}
"""A rate refusal -> the ``scope`` label of the rate-limited metric."""


def auth_failure_of(reason: str) -> AuthFailure | None:
    """The metric label of a credential refusal (None for rate and peer refusals)."""
    try:
        return AuthFailure(reason)
    except ValueError:
        return None
