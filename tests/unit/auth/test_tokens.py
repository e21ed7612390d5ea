"""Tokens: issued claims verify offline; every way a token can be bad has its own reason."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from peerllm.auth import Reason, Role, issuer_id_of, parse_issuer_id
from peerllm.auth.tokens import TOKEN_TYP, TokenVerifier, issue, make_claims
from peerllm.errors import AuthError

NOW = 1_800_000_000


class NoRevocations:
    def __init__(self) -> None:
        self.revoked: set[tuple[str, str]] = set()

    def is_revoked(self, issuer: str, token_id: str) -> bool:
        return (issuer, token_id) in self.revoked


def token_for(key: Ed25519PrivateKey, **kw: object) -> str:
    args: dict[str, object] = {"subject": "alice", "roles": [Role.USER], "now": NOW,
                               "ttl_s": 3600} | kw
    return issue(key, make_claims(key, **args))  # type: ignore[arg-type]


def reason(verifier: TokenVerifier, token: str, now: float = NOW) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, now=now)
    return info.value.reason


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_token_verifies_with_its_claims(key: Ed25519PrivateKey) -> None:
    verifier = TokenVerifier({issuer_id_of(key)}, NoRevocations())
    token = token_for(key, models=["m1"], requests_per_min=5, tokens_per_min=100,
                      roles=[Role.OPERATOR, Role.USER])
    claims = verifier.verify(token, now=NOW + 10)
    assert claims.subject == "alice"
    assert claims.issuer == issuer_id_of(key)
    assert claims.roles == (Role.USER, Role.OPERATOR) and claims.role is Role.OPERATOR
    assert claims.models == ("m1",) and claims.allows_model("m1")
    assert not claims.allows_model("m2")
    # A version pin narrows the model; the token still names it without one.
    assert claims.allows_model("m1@1a2b3c4d") and not claims.allows_model("m2@1a2b3c4d")
    assert (claims.requests_per_min, claims.tokens_per_min) == (5, 100)
    assert claims.expires_at == NOW + 3600
    # A standard JWT: any JOSE library reads it with the issuer's public key.
    decoded = jwt.decode(token, key.public_key(), algorithms=["EdDSA"],
                         options={"verify_exp": False, "verify_iat": False})
    assert decoded["sub"] == "alice" and decoded["roles"] == ["user", "operator"]
    assert jwt.get_unverified_header(token)["typ"] == TOKEN_TYP


def test_every_bad_token_names_its_reason(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    revocations = NoRevocations()
    verifier = TokenVerifier({issuer_id_of(key)}, revocations)
    good = token_for(key)
    assert reason(verifier, token_for(other)) == Reason.UNTRUSTED_ISSUER
    head, body, _sig = good.split(".")
    forged_sig = token_for(other).split(".")[2]
    assert reason(verifier, f"{head}.{body}.{forged_sig}") == Reason.FORGED
    # The claims changed after signing (a role raised to admin).
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["roles"] = ["admin"]
    raised = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert reason(verifier, f"{head}.{raised}.{_sig}") == Reason.FORGED
    assert reason(verifier, good, now=NOW + 3600) == Reason.EXPIRED
    assert reason(verifier, "not-a-jwt") == Reason.MALFORMED
    assert reason(verifier, "x" * 5000) == Reason.MALFORMED
    # alg "none" and HMAC-with-the-public-key confusion are refused before any check.
    unsigned = jwt.encode({"sub": "alice"}, None, algorithm="none",
                          headers={"kid": issuer_id_of(key), "typ": TOKEN_TYP})
    assert reason(verifier, unsigned) == Reason.MALFORMED
    hmac = jwt.encode({"sub": "alice"}, "s" * 32, algorithm="HS256",
                      headers={"kid": issuer_id_of(key), "typ": TOKEN_TYP})
    assert reason(verifier, hmac) == Reason.MALFORMED
    # Another kind of signed record is not a token.
    wrong_typ = jwt.encode(claims, key, algorithm="EdDSA",
                           headers={"kid": issuer_id_of(key), "typ": "peerllm-revocation"})
    assert reason(verifier, wrong_typ) == Reason.MALFORMED
    revocations.revoked.add((issuer_id_of(key), verifier.verify(good, now=NOW).id))
    assert reason(verifier, good) == Reason.REVOKED


def test_a_token_issued_in_the_future_is_refused(key: Ed25519PrivateKey) -> None:
    verifier = TokenVerifier({issuer_id_of(key)}, NoRevocations())
    assert reason(verifier, token_for(key, now=NOW + 3600), now=NOW) == Reason.MALFORMED


def test_bad_claims_are_refused_at_creation(key: Ed25519PrivateKey) -> None:
    for bad in ({"subject": ""}, {"roles": []}, {"ttl_s": 0}, {"models": [""]},
                {"requests_per_min": 0}, {"subject": "a\nb"}):
        with pytest.raises(ValueError, match=r"token|lifetime"):
            token_for(key, **bad)


@given(subject=st.text(min_size=1, max_size=128).filter(str.isprintable),
       roles=st.sets(st.sampled_from(list(Role)), min_size=1),
       models=st.none() | st.lists(st.text(min_size=1, max_size=40), max_size=5),
       rpm=st.none() | st.integers(1, 10**9), ttl=st.integers(1, 10**8))
def test_claims_survive_issue_and_verify(subject: str, roles: set[Role],
                                         models: list[str] | None, rpm: int | None,
                                         ttl: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    claims = make_claims(key, subject=subject, roles=roles, now=NOW, ttl_s=ttl,
                         models=models, requests_per_min=rpm)
    verified = TokenVerifier({issuer_id_of(key)}, NoRevocations()).verify(
        issue(key, claims), now=NOW)
    assert verified == claims


def test_issuer_ids_parse_both_forms(key: Ed25519PrivateKey) -> None:
    iid = issuer_id_of(key)
    assert parse_issuer_id(f"  {iid} ") == iid
    assert parse_issuer_id(key.public_key().public_bytes_raw().hex()) == iid
    for bad in ("", "ed25519:short", "x" * 64, "ed25519:" + "!" * 43):
        with pytest.raises(ValueError, match="not an issuer id"):
            parse_issuer_id(bad)
