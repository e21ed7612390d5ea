"""Why a request was refused: one bounded set of reasons (HTTP status, audit, metrics)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Reason(StrEnum):
    """The reason of an ``AuthError``; also the ``reason`` label of the metrics."""

    MISSING = "missing"  # no Authorization header where one is required
    MALFORMED = "malformed"  # not a bearer JWT we can parse
    FORGED = "forged"  # the signature does not verify
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNTRUSTED_ISSUER = "untrusted_issuer"
    FORBIDDEN_ROLE = "forbidden_role"
    FORBIDDEN_MODEL = "forbidden_model"
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
