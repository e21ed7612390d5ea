"""One node's authority: its issuer key, the issuers it trusts, revocations, quotas.

``Authority`` is what the API and the mesh ask "who is this, and may they?". It
verifies tokens offline (``tokens.TokenVerifier``), issues and revokes tokens for this
node's own issuer, and keeps the per-token rate buckets. Times are wall-clock seconds
passed in by the caller (tokens carry wall-clock expiries).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..config import AuthConfig
from ..errors import AuthError, ConfigError
from ..identity import load_or_create_key
from .delegation import NodeCert, ReplayCache, read_delegation, read_node_cert
from .issuers import IssuerId, issuer_id_of, parse_issuer_id
from .jws import check_times, refuse
from .ledger import TokenLedger
from .quota import QuotaBook
from .reasons import Reason
from .revocations import MAX_RECORD_LIFETIME_S, Revocation, RevocationBook
from .roles import Role
from .tokens import TokenClaims, TokenVerifier, issue, make_claims

logger = logging.getLogger(__name__)

ISSUER_KEY_FILE: Final = "issuer.key"
AUTH_DIR: Final = "auth"
ANONYMOUS: Final = "anonymous"
SERVE_TRUSTED: Final = "trusted"  # p2p.serve_peers: only vouched-for peers get inference
MAX_CERT_CACHE: Final = 1024
_ISSUER_REFUSAL: Final = (
    "; refusing to start — restore the file or remove it to create a NEW issuer key "
    "(every token it issued stops working)"
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. ``claims`` None: no token (only where auth is not
    required); ``via``: the peer that forwarded the request to us."""

    subject: str
    claims: TokenClaims | None = None
    via: str | None = None

    @property
    def token_id(self) -> str | None:
        return None if self.claims is None else self.claims.id

    def may(self, role: Role) -> bool:
        return self.claims is None or self.claims.role >= role


def bearer_token(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` header (None if none given).

    Raises:
        AuthError(malformed): a header that is not a bearer credential.
    """
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise refuse(Reason.MALFORMED, "the Authorization header must be 'Bearer <token>'")
    return value.strip()


def load_issuer_key(path: Path) -> Ed25519PrivateKey:
    """This node's issuer key (created on first use, 0600, never replaced).

    Raises:
        IdentityError: the file exists but cannot be used.
    """
    return load_or_create_key(path, what="issuer key", refusal=_ISSUER_REFUSAL)[0]


def trusted_issuers(config: AuthConfig, own: IssuerId) -> frozenset[IssuerId]:
    """Our own issuer plus every configured one.

    Raises:
        ConfigError: a configured issuer id is not a valid public key.
    """
    out = {own}
    for text in config.trusted_issuers:
        try:
            out.add(parse_issuer_id(text))
        except ValueError as exc:
            raise ConfigError("auth.trusted_issuers", str(exc)) from None
    return frozenset(out)


class Authority:
    """Verifies, authorises and rate-limits requests; issues and revokes our tokens."""

    def __init__(self, *, data_dir: Path, config: AuthConfig) -> None:
        self.config = config
        self.required = config.required
        self.issuer_key = load_issuer_key(config.issuer_key_file
                                          or data_dir / ISSUER_KEY_FILE)
        self.issuer_id = issuer_id_of(self.issuer_key)
        self.trusted = trusted_issuers(config, self.issuer_id)
        self.revocations = RevocationBook(data_dir / AUTH_DIR / "revoked",
                                          trusted=self.trusted)
        self.ledger = TokenLedger(data_dir / AUTH_DIR / "tokens")
        self.verifier = TokenVerifier(self.trusted, self.revocations)
        self.quotas = QuotaBook()
        self.replays = ReplayCache()
        self._certs: dict[tuple[str, str], NodeCert] = {}  # verified (cert, peer)

    # -- requests --------------------------------------------------------------------

    def authenticate(self, authorization: str | None, *, now: float) -> Principal:
        """The principal of a request with this Authorization header.

        Where auth is not required, a missing or unusable credential is anonymous (so
        clients that must send *some* api_key keep working); where it is, it is refused.

        Raises:
            AuthError: missing, malformed, forged, expired, revoked, untrusted_issuer.
        """
        try:
            token = bearer_token(authorization)
            if token is None:
                raise refuse(Reason.MISSING, "this node requires a token: send "
                             "'Authorization: Bearer <token>' (see `peerllm token create`)")
            claims = self.verifier.verify(token, now=now)
        except AuthError:
            if self.required:
                raise
            return Principal(ANONYMOUS)
        return Principal(claims.subject, claims)

    def authorize(self, principal: Principal, role: Role, *, model: str | None = None
                  ) -> None:
        """Raises AuthError(forbidden_role | forbidden_model) unless ``principal`` may."""
        claims = principal.claims
        if claims is None:
            return
        if claims.role < role:
            raise refuse(Reason.FORBIDDEN_ROLE, f"this needs the {role.label!r} role; the "
                         f"token of {claims.subject!r} has {claims.role.label!r}")
        if model is not None and not claims.allows_model(model):
            raise refuse(Reason.FORBIDDEN_MODEL, f"the token of {claims.subject!r} may not "
                         f"use model {model!r}")

    def admit(self, principal: Principal, *, now: float) -> None:
        """Count one request against the principal's rates (429 when over)."""
        c = principal.claims
        if c is not None:
            self.quotas.admit(f"{c.issuer}/{c.id}", requests_per_min=c.requests_per_min,
                              tokens_per_min=c.tokens_per_min, now=now)

    def charge(self, principal: Principal, tokens: int, *, now: float) -> None:
        c = principal.claims
        if c is not None:
            self.quotas.charge_tokens(f"{c.issuer}/{c.id}", tokens,
                                      tokens_per_min=c.tokens_per_min, now=now)

    # -- requests forwarded by peers (protocols/auth.md, "Forwarded requests") -------

    def principal_for_peer(self, delegation: str | None, *, peer: str, self_peer: str,
                           serve_peers: str, trusted_peers: Collection[str], now: float
                           ) -> Principal:
        """Whom a request that ``peer`` forwarded to us (``self_peer``) acts for.

        ``peer`` is the connection's authenticated remote peer, never something the
        request says. In order: the delegation (if any) must verify with ``peer``'s node
        key, be for us, be current and unused; in ``serve_peers: trusted`` the peer must
        be vouched for (a certificate by an issuer we trust, or in ``trusted_peers``);
        then the delegated token must be from an issuer we trust, current, not revoked
        here, and vouched for by a trusted forwarder. Where auth is not required, a
        token that fails those last checks (or none) makes the request anonymous, as on
        the HTTP API; a bad delegation is refused whatever the mode.

        Raises:
            AuthError: bad_delegation, untrusted_peer (403), and where auth is required
                missing, untrusted_issuer, expired, revoked; rate_limited when the
                replay cache is full.
        """
        d = None
        if delegation is not None:
            d = read_delegation(delegation, peer=peer, audience=self_peer, now=now)
            self.replays.use(d, now=now)
        distrust = None if peer in trusted_peers else self._forwarder_distrust(
            None if d is None else d.cert, peer, now)
        if serve_peers == SERVE_TRUSTED and distrust is not None:
            raise refuse(Reason.UNTRUSTED_PEER, f"this node serves only trusted peers "
                         f"(p2p.serve_peers: trusted) and {peer} is not one: {distrust}")
        token = None if d is None else d.token
        try:
            if token is None:
                raise refuse(Reason.MISSING, "the forwarded request carries no token (the "
                             "forwarding node does not require one)")
            self._check_delegated(token, now)
            if distrust is not None:
                raise refuse(Reason.UNTRUSTED_PEER, f"forwarder {peer} may not vouch for "
                             f"tokens here: {distrust}")
        except AuthError:
            if self.required:
                raise
            return Principal(ANONYMOUS, via=peer)
        return Principal(token.subject, token, via=peer)

    def _check_delegated(self, token: TokenClaims, now: float) -> None:
        """The checks of TokenVerifier.verify that need no signature (the forwarder
        verified that; we cannot, having only the facts)."""
        if token.issuer not in self.trusted:
            raise refuse(Reason.UNTRUSTED_ISSUER, f"the token's issuer {token.issuer!r} is "
                         "not trusted by this node (see --trust-issuer)")
        check_times({"iat": token.issued_at, "exp": token.expires_at}, now=now,
                    what="token")
        if self.revocations.is_revoked(token.issuer, token.id):
            raise refuse(Reason.REVOKED, f"token {token.id} was revoked")

    def vouched_for(self, peer: str, *, now: float) -> bool:
        """Whether ``peer`` showed us a current node certificate by an issuer we trust
        (on a request it forwarded): the trust ``serve_peers: trusted`` asks, for what
        carries no certificate of its own (model downloads, ``models.share: trusted``)."""
        return any(p == peer and known.expires_at > now
                   for (_, p), known in self._certs.items())

    def _forwarder_distrust(self, cert: str | None, peer: str, now: float) -> str | None:
        """Why ``peer`` is not vouched for by ``cert``, or None if it is."""
        if cert is None:
            return "it sent no node certificate"
        known = self._certs.get((cert, peer))
        if known is None:
            try:
                known = read_node_cert(cert, peer=peer, trusted=self.trusted, now=now)
            except AuthError as exc:
                return exc.message
            if len(self._certs) >= MAX_CERT_CACHE:
                self._certs.pop(next(iter(self._certs)))
            self._certs[(cert, peer)] = known
        if known.expires_at <= now:
            return "its node certificate expired"
        return None

    # -- our own tokens --------------------------------------------------------------

    def create_token(self, *, subject: str, roles: Collection[Role], ttl_s: int, now: int,
                     models: Collection[str] | None = None,
                     requests_per_min: int | None = None,
                     tokens_per_min: int | None = None) -> tuple[str, TokenClaims]:
        """Issue a token with our issuer key and record it in the ledger.

        Raises:
            ValueError: bad claims (empty subject, bad TTL...).
            OSError: the ledger could not be written.
        """
        claims = make_claims(self.issuer_key, subject=subject, roles=roles, now=now,
                             ttl_s=ttl_s, models=models, requests_per_min=requests_per_min,
                             tokens_per_min=tokens_per_min)
        self.ledger.record(claims)
        return issue(self.issuer_key, claims), claims

    def revoke(self, token_id: str, *, now: int) -> Revocation:
        """Revoke one of our tokens (one we never recorded too: then for the longest
        lifetime a record may have)."""
        known = self.ledger.get(token_id)
        until = known.expires_at if known is not None else now + MAX_RECORD_LIFETIME_S
        return self.revocations.revoke(self.issuer_key, token_id, now=now, until=until)

    def is_revoked(self, claims: TokenClaims) -> bool:
        return self.revocations.is_revoked(claims.issuer, claims.id)
