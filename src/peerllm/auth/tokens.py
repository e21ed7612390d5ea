"""Access tokens: their claims, issuing one, and verifying one offline against trusted issuers.

A token is a JWT (``typ: peerllm-token``) signed by an issuer key; see protocols/auth.md for
the claims. Verification needs no network: the issuer id in the token *is* its public key,
so a node checks that the issuer is one it trusts, the signature, the times and the
revocation list. Verified tokens are cached (signature checks are the expensive part;
expiry and revocation are checked on every use).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import AuthError
from ..scheduling.pins import PIN_SEPARATOR
from .issuers import IssuerId, issuer_id_of, public_key
from .jws import check_times, decode, encode, refuse, unverified_header
from .reasons import Reason
from .roles import Role

TOKEN_TYP: Final = "peerllm-token"
MAX_SUBJECT_CHARS: Final = 128
MAX_MODELS: Final = 64
MAX_MODEL_CHARS: Final = 256
TOKEN_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    """What a verified token says. ``models`` None means every model; a rate None means
    no limit."""

    id: str  # jti
    subject: str  # sub: a user or app name
    issuer: IssuerId  # iss
    roles: tuple[Role, ...]
    models: tuple[str, ...] | None = None
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    issued_at: int = 0
    expires_at: int = 0

    @property
    def role(self) -> Role:
        return max(self.roles)

    def allows_model(self, model: str) -> bool:
        """True when the token covers ``model``; a pinned ``id@<digest prefix>`` is
        covered by its id (the pin only narrows which file serves it)."""
        return self.models is None or model.partition(PIN_SEPARATOR)[0] in self.models \
            or model in self.models

    def to_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {"jti": self.id, "sub": self.subject, "iss": self.issuer,
                                  "roles": [r.label for r in self.roles],
                                  "iat": self.issued_at, "exp": self.expires_at}
        if self.models is not None:
            claims["models"] = list(self.models)
        if self.requests_per_min is not None:
            claims["rpm"] = self.requests_per_min
        if self.tokens_per_min is not None:
            claims["tpm"] = self.tokens_per_min
        return claims


def new_token_id() -> str:
    return secrets.token_hex(8)


def make_claims(issuer: Ed25519PrivateKey, *, subject: str, roles: Collection[Role],
                now: int, ttl_s: int, models: Collection[str] | None = None,
                requests_per_min: int | None = None, tokens_per_min: int | None = None,
                token_id: str | None = None) -> TokenClaims:
    """Claims for a new token, checked with the same rules a verifier applies.

    Raises:
        ValueError: an empty subject or role list, a bad TTL, rate or model list.
    """
    claims = TokenClaims(
        id=token_id or new_token_id(), subject=subject, issuer=issuer_id_of(issuer),
        roles=tuple(sorted(set(roles))), models=None if models is None else tuple(models),
        requests_per_min=requests_per_min, tokens_per_min=tokens_per_min,
        issued_at=now, expires_at=now + ttl_s)
    if ttl_s <= 0:
        raise ValueError("the token's lifetime must be positive")
    try:
        return claims_from_map(claims.to_claims())
    except AuthError as exc:
        raise ValueError(exc.message) from None


def issue(issuer: Ed25519PrivateKey, claims: TokenClaims) -> str:
    """The signed token for ``claims`` (which must name ``issuer``'s id)."""
    if claims.issuer != issuer_id_of(issuer):
        raise ValueError("the claims name another issuer than the signing key")
    return encode(issuer, claims.to_claims(), typ=TOKEN_TYP, kid=claims.issuer)


def _opt_rate(claims: dict[str, Any], key: str) -> int | None:
    value = claims.get(key)
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= 10**9:
        raise refuse(Reason.MALFORMED, f"the token's {key!r} must be an integer 1..1e9")
    return value


def claims_from_map(claims: dict[str, Any]) -> TokenClaims:
    """Check a token's decoded claims (types, sizes, known roles).

    Raises:
        AuthError(malformed): naming the claim.
    """
    jti, sub, iss = claims.get("jti"), claims.get("sub"), claims.get("iss")
    if not isinstance(jti, str) or not TOKEN_ID.fullmatch(jti):
        raise refuse(Reason.MALFORMED, "the token's 'jti' must be 1-64 of [A-Za-z0-9_-]")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT_CHARS \
            or not sub.isprintable():
        raise refuse(Reason.MALFORMED, f"the token's 'sub' must be 1-{MAX_SUBJECT_CHARS} "
                     "printable characters")
    if not isinstance(iss, str):
        raise refuse(Reason.MALFORMED, "the token has no 'iss'")
    raw_roles = claims.get("roles")
    if not isinstance(raw_roles, list) or not raw_roles or len(raw_roles) > 8:
        raise refuse(Reason.MALFORMED, "the token's 'roles' must be a list of 1-8 roles")
    if not all(isinstance(r, str) for r in raw_roles):
        raise refuse(Reason.MALFORMED, "the token's 'roles' must be role names")
    try:
        roles = tuple(sorted({Role.parse(r) for r in raw_roles}))
    except ValueError as exc:
        raise refuse(Reason.MALFORMED, f"the token's 'roles': {exc}") from None
    models = claims.get("models")
    if models is not None and (
            not isinstance(models, list) or len(models) > MAX_MODELS
            or not all(isinstance(m, str) and 0 < len(m) <= MAX_MODEL_CHARS for m in models)):
        raise refuse(Reason.MALFORMED, f"the token's 'models' must be a list of at most "
                     f"{MAX_MODELS} model ids")
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int or type(exp) is not int:
        raise refuse(Reason.MALFORMED, "the token needs integer 'iat' and 'exp' claims")
    return TokenClaims(id=jti, subject=sub, issuer=IssuerId(iss), roles=roles,
                       models=None if models is None else tuple(models),
                       requests_per_min=_opt_rate(claims, "rpm"),
                       tokens_per_min=_opt_rate(claims, "tpm"), issued_at=iat, expires_at=exp)


class RevocationCheck(Protocol):
    def is_revoked(self, issuer: str, token_id: str) -> bool: ...


class TokenVerifier:
    """Verifies tokens against a fixed set of trusted issuers and a live revocation list."""

    def __init__(self, trusted: Collection[IssuerId], revocations: RevocationCheck) -> None:
        self._trusted = frozenset(trusted)
        self._revocations = revocations
        self._cache: dict[str, TokenClaims] = {}

    @property
    def trusted(self) -> frozenset[IssuerId]:
        return self._trusted

    def verify(self, token: str, *, now: float) -> TokenClaims:
        """The claims of a token that is well-formed, signed by a trusted issuer, current
        and not revoked.

        Raises:
            AuthError: malformed, untrusted_issuer, forged, expired or revoked.
        """
        claims = self._cache.get(token)
        if claims is None:
            claims = self._verify_signature(token, now)
        check_times({"iat": claims.issued_at, "exp": claims.expires_at}, now=now,
                    what="token")
        if self._revocations.is_revoked(claims.issuer, claims.id):
            raise refuse(Reason.REVOKED, f"token {claims.id} was revoked")
        return claims

    def _verify_signature(self, token: str, now: float) -> TokenClaims:
        header = unverified_header(token, what="token")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self._trusted:
            shown = kid[:64] if isinstance(kid, str) else "no issuer"
            raise refuse(Reason.UNTRUSTED_ISSUER, f"the token's issuer {shown!r} is not "
                         "trusted by this node (see --trust-issuer)")
        claims = claims_from_map(decode(token, public_key(IssuerId(kid)), typ=TOKEN_TYP,
                                        what="token"))
        if claims.issuer != kid:
            raise refuse(Reason.MALFORMED, "the token's 'iss' and 'kid' differ")
        check_times(claims.to_claims(), now=now, what="token")
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = claims
        return claims
