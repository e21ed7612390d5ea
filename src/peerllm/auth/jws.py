"""Compact EdDSA JWS/JWT signing and checking through PyJWT, for every signed thing of ours.

Tokens, revocations, node certificates, delegations and receipts are all JWTs signed with
Ed25519 (``alg: EdDSA``), told apart by the header's ``typ`` so that one kind can never
be passed off as another. Only ``EdDSA`` is accepted on decode: no ``none``, no HMAC
with a public key as the secret.
"""

from __future__ import annotations

from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..errors import AuthError
from .reasons import STATUS, Reason

ALGORITHM: Final = "EdDSA"
MAX_JWT_CHARS: Final = 4096
"""Longer strings are refused before any parsing (a token of ours is ~400 characters)."""


def refuse(reason: Reason, message: str, *, retry_after_s: float | None = None) -> AuthError:
    """The AuthError for ``reason`` with its HTTP status."""
    return AuthError(reason.value, message, status=STATUS[reason], retry_after_s=retry_after_s)


def encode(key: Ed25519PrivateKey, claims: dict[str, Any], *, typ: str, kid: str) -> str:
    """Sign ``claims`` as a compact JWT whose header names ``typ`` and the key ``kid``."""
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": typ, "kid": kid})


def unverified_header(token: object, *, what: str, max_chars: int = MAX_JWT_CHARS
                      ) -> dict[str, Any]:
    """The header of ``token`` (not yet trusted: only to pick the key to verify with).

    Raises:
        AuthError(malformed): not a compact EdDSA JWT of at most ``max_chars``.
    """
    if not isinstance(token, str) or not token or len(token) > max_chars:
        raise refuse(Reason.MALFORMED, f"the {what} is not a JWT of at most "
                     f"{max_chars} characters")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise refuse(Reason.MALFORMED, f"the {what} is not a JWT ({exc})") from exc
    if header.get("alg") != ALGORITHM:
        raise refuse(Reason.MALFORMED, f"the {what} must be signed with EdDSA, "
                     f"not {str(header.get('alg'))[:16]!r}")
    return header


def decode(token: str, key: Ed25519PublicKey, *, typ: str, what: str,
           audience: str | None = None, max_chars: int = MAX_JWT_CHARS) -> dict[str, Any]:
    """The claims of ``token`` once its signature by ``key`` verifies.

    Times are NOT checked here (callers pass their own clock to ``check_times``).

    Raises:
        AuthError: malformed (wrong ``typ``, bad JSON, wrong audience) or forged.
    """
    header = unverified_header(token, what=what, max_chars=max_chars)
    if header.get("typ") != typ:
        raise refuse(Reason.MALFORMED, f"the {what} has typ {str(header.get('typ'))[:32]!r}, "
                     f"expected {typ!r}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=audience,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "verify_aud": audience is not None})
    except jwt.InvalidSignatureError as exc:
        raise refuse(Reason.FORGED, f"the {what}'s signature does not verify") from exc
    except jwt.InvalidAudienceError as exc:
        raise refuse(Reason.MALFORMED, f"the {what} is for another audience") from exc
    except jwt.PyJWTError as exc:
        raise refuse(Reason.MALFORMED, f"the {what} cannot be read ({exc})") from exc
    return claims


def check_times(claims: dict[str, Any], *, now: float, what: str, skew_s: float = 60.0
                ) -> tuple[int, int]:
    """``(iat, exp)`` of ``claims``, checked against ``now``.

    Raises:
        AuthError: malformed (missing or non-integer times, issued in the future beyond
            ``skew_s``) or expired.
    """
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int or type(exp) is not int or exp < iat:
        raise refuse(Reason.MALFORMED, f"the {what} needs integer 'iat' <= 'exp' claims")
    if iat > now + skew_s:
        raise refuse(Reason.MALFORMED, f"the {what} is issued in the future (check clocks)")
    if exp <= now:
        raise refuse(Reason.EXPIRED, f"the {what} expired {int(now - exp)} s ago")
    return iat, exp
