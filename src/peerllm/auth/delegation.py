"""Delegations and node certificates: how a forwarding node says whom a request acts for.

A node that forwards a user's request to a peer never passes the user's token on: the
peer could replay it against other nodes' HTTP APIs. It signs a **delegation** instead,
with its libp2p node key, for exactly one serving peer and one minute, carrying the facts
of the token it verified itself. A **node certificate** is an issuer vouching for a node
key; the forwarder attaches its own, so that a peer trusting that issuer trusts the
forwarder. Formats and the checks in order: protocols/auth.md, "Forwarded requests".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..errors import AuthError
from ..identity import public_key_of
from ..wire.infer import MAX_AUTH_CHARS
from .issuers import IssuerId, issuer_id_of, public_key
from .jws import check_times, decode, encode, refuse, unverified_header
from .reasons import Reason
from .tokens import TOKEN_ID, TokenClaims, claims_from_map

DELEGATION_TYP: Final = "peerllm-delegation"
CERT_TYP: Final = "peerllm-node-cert"
DELEGATION_TTL_S: Final = 60
MAX_DELEGATION_LIFETIME_S: Final = 120  # a receiver refuses longer-lived delegations
CERT_TTL_S: Final = 30 * 86400
MAX_CERT_LIFETIME_S: Final = 400 * 86400
MAX_DELEGATION_CHARS: Final = MAX_AUTH_CHARS  # what the infer wire carries in req.auth
MAX_REPLAY_ENTRIES: Final = 65_536


def peer_key(peer_id: str) -> Ed25519PublicKey:
    """The node key an Ed25519 peer ID embeds.

    Raises:
        AuthError(bad_delegation): the peer ID holds no Ed25519 key.
    """
    try:
        return Ed25519PublicKey.from_public_bytes(public_key_of(peer_id))
    except ValueError as exc:
        raise refuse(Reason.BAD_DELEGATION, f"peer {peer_id[:64]!r} has no Ed25519 key to "
                     "verify with") from exc


# -- node certificates -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCert:
    """An issuer's statement that ``peer`` (a node key) is one of its nodes."""

    issuer: IssuerId
    peer: str
    expires_at: int


def make_node_cert(issuer: Ed25519PrivateKey, peer_id: str, *, now: int,
                   ttl_s: int = CERT_TTL_S) -> str:
    """``issuer``'s certificate for the node ``peer_id``, valid ``ttl_s`` from ``now``."""
    iss = issuer_id_of(issuer)
    return encode(issuer, {"iss": iss, "sub": peer_id, "iat": now, "exp": now + ttl_s},
                  typ=CERT_TYP, kid=iss)


def read_node_cert(cert: str, *, peer: str, trusted: frozenset[IssuerId], now: float
                   ) -> NodeCert:
    """Check that ``cert`` vouches for ``peer`` and comes from a ``trusted`` issuer.

    The issuer is checked before the signature, so certificates of keys a peer made up
    cost no signature check.

    Raises:
        AuthError: untrusted_issuer, forged, expired or malformed (not for ``peer``).
    """
    kid = unverified_header(cert, what="node certificate").get("kid")
    if not isinstance(kid, str) or kid not in trusted:
        shown = kid[:64] if isinstance(kid, str) else "no issuer"
        raise refuse(Reason.UNTRUSTED_ISSUER, f"the node certificate's issuer {shown!r} is "
                     "not trusted here")
    claims = decode(cert, public_key(IssuerId(kid)), typ=CERT_TYP, what="node certificate")
    if claims.get("iss") != kid or claims.get("sub") != peer:
        raise refuse(Reason.MALFORMED, "the node certificate is not its issuer's for this "
                     "peer")
    iat, exp = check_times(claims, now=now, what="node certificate")
    if exp - iat > MAX_CERT_LIFETIME_S:
        raise refuse(Reason.MALFORMED, "the node certificate lives longer than allowed")
    return NodeCert(IssuerId(kid), peer, exp)


# -- delegations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegation:
    """A verified delegation. ``token`` is the user's token as the forwarder verified it
    (None: an anonymous caller); ``cert`` the forwarder's node certificate, unchecked."""

    forwarder: str  # iss: the forwarding node's peer ID (= the connection's peer)
    audience: str  # aud: the serving node's peer ID
    id: str  # jti: one delegation buys one request
    issued_at: int
    expires_at: int
    subject: str
    token: TokenClaims | None
    cert: str | None


def make_delegation(node_key: Ed25519PrivateKey, *, forwarder: str, audience: str,
                    subject: str, token: TokenClaims | None, cert: str | None, now: int,
                    ttl_s: int = DELEGATION_TTL_S, jti: str | None = None) -> str:
    """A delegation from ``forwarder`` (whose node key is ``node_key``) to ``audience``."""
    claims: dict[str, Any] = {"iss": forwarder, "aud": audience, "iat": now,
                              "exp": now + ttl_s, "jti": jti or secrets.token_hex(8),
                              "sub": subject}
    if token is not None:
        claims.update(tid=token.id, tiss=token.issuer, tiat=token.issued_at,
                      texp=token.expires_at, roles=[r.label for r in token.roles])
        if token.models is not None:
            claims["models"] = list(token.models)
        if token.requests_per_min is not None:
            claims["rpm"] = token.requests_per_min
        if token.tokens_per_min is not None:
            claims["tpm"] = token.tokens_per_min
    if cert is not None:
        claims["cert"] = cert
    return encode(node_key, claims, typ=DELEGATION_TYP, kid=forwarder)


def read_delegation(text: str, *, peer: str, audience: str, now: float) -> Delegation:
    """Verify a delegation received from ``peer`` (the connection's authenticated peer).

    Checks, in order: size and shape; the signature, with ``peer``'s own node key (so
    nobody else's delegation passes, whatever it claims); ``aud`` is ``audience``; ``iss``
    is ``peer``; the times and a lifetime of at most MAX_DELEGATION_LIFETIME_S; the
    token facts' shapes. Not checked here: replays, trust in the token or the forwarder
    (``Authority.principal_for_peer``).

    Raises:
        AuthError(bad_delegation): naming the first check that failed.
    """
    try:
        claims = decode(text, peer_key(peer), typ=DELEGATION_TYP, what="delegation",
                        audience=audience, max_chars=MAX_DELEGATION_CHARS)
        if claims.get("iss") != peer:
            raise refuse(Reason.MALFORMED, "the delegation names another forwarder than "
                         "the peer that sent it")
        iat, exp = check_times(claims, now=now, what="delegation")
        if exp - iat > MAX_DELEGATION_LIFETIME_S:
            raise refuse(Reason.MALFORMED, f"the delegation lives {exp - iat} s, more than "
                         f"{MAX_DELEGATION_LIFETIME_S} s")
        jti, sub, cert = claims.get("jti"), claims.get("sub"), claims.get("cert")
        if not isinstance(jti, str) or not TOKEN_ID.fullmatch(jti):
            raise refuse(Reason.MALFORMED, "the delegation's 'jti' must be 1-64 of "
                         "[A-Za-z0-9_-]")
        if cert is not None and not isinstance(cert, str):
            raise refuse(Reason.MALFORMED, "the delegation's 'cert' must be a JWT")
        token = _token_facts(claims) if "tid" in claims else None
        if token is None and (not isinstance(sub, str) or not 0 < len(sub) <= 128):
            raise refuse(Reason.MALFORMED, "the delegation's 'sub' must be 1-128 characters")
    except AuthError as exc:
        if exc.reason == Reason.BAD_DELEGATION:
            raise
        raise refuse(Reason.BAD_DELEGATION, exc.message) from exc
    return Delegation(forwarder=peer, audience=audience, id=jti, issued_at=iat,
                      expires_at=exp, subject=token.subject if token else str(sub),
                      token=token, cert=cert)


def _token_facts(claims: dict[str, Any]) -> TokenClaims:
    """The delegated token's claims, with the token's own shape rules."""
    facts = {"jti": claims.get("tid"), "sub": claims.get("sub"), "iss": claims.get("tiss"),
             "roles": claims.get("roles"), "iat": claims.get("tiat"),
             "exp": claims.get("texp")}
    for key in ("models", "rpm", "tpm"):
        if key in claims:
            facts[key] = claims[key]
    return claims_from_map(facts)


class ReplayCache:
    """Delegations already used, until they expire: a delegation buys one request.

    Entries live at most MAX_DELEGATION_LIFETIME_S, so the cache holds what arrives in
    two minutes; past ``max_entries`` a new forwarded request is refused as over a rate
    (a flood, not a memory leak).
    """

    def __init__(self, max_entries: int = MAX_REPLAY_ENTRIES) -> None:
        self._max = max_entries
        self._seen: dict[tuple[str, str], int] = {}  # (forwarder, jti) -> expiry

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, delegation: Delegation, *, now: float) -> None:
        """Record one use of ``delegation``.

        Raises:
            AuthError: bad_delegation (used before), rate_limited (the cache is full).
        """
        self._prune(now)
        key = (delegation.forwarder, delegation.id)
        if key in self._seen:
            raise refuse(Reason.BAD_DELEGATION, f"delegation {delegation.id} was already "
                         "used (a replay)")
        if len(self._seen) >= self._max:
            soonest = min(self._seen.values())
            raise refuse(Reason.RATE_LIMITED, "too many forwarded requests in the last "
                         "two minutes", retry_after_s=max(1.0, soonest - now))
        self._seen[key] = delegation.expires_at

    def _prune(self, now: float) -> None:
        # Insertion order is nearly expiry order (lifetimes are short and bounded): drop
        # from the front until a live entry; stragglers go on a later call.
        while self._seen:
            key = next(iter(self._seen))
            if self._seen[key] > now:
                break
            del self._seen[key]
