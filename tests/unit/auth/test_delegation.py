"""Delegations, node certificates and receipts: each check of protocols/auth.md, in order,
and Authority.principal_for_peer's decisions for forwarded requests."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.auth import Authority, Principal, Reason, Role
from peerllm.auth.credentials import NodeCredentials
from peerllm.auth.delegation import (
    DELEGATION_TYP,
    ReplayCache,
    make_delegation,
    make_node_cert,
    read_delegation,
    read_node_cert,
)
from peerllm.auth.issuers import issuer_id_of
from peerllm.auth.jws import encode
from peerllm.auth.receipts import Receipt, make_receipt, read_receipt
from peerllm.config import AuthConfig
from peerllm.errors import AuthError
from peerllm.identity import peer_id_of, public_key_bytes, public_key_of

NOW = 1_800_000_000


class Node:
    """A node's two keys, as the mesh sees them."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.issuer = Ed25519PrivateKey.generate()
        self.peer = peer_id_of(public_key_bytes(self.key))
        self.creds = NodeCredentials(node_key=self.key, peer_id=self.peer,
                                     issuer_key=self.issuer)


def refused(reason: Reason) -> pytest.RaisesExc[AuthError]:
    return pytest.raises(AuthError, match=f"^{reason.value}: ")


def authority(tmp_path: Path, *, required: bool = True, trust: tuple[Ed25519PrivateKey, ...] = ()
              ) -> Authority:
    cfg = AuthConfig(required=required, trusted_issuers=tuple(issuer_id_of(k) for k in trust))
    return Authority(data_dir=tmp_path, config=cfg)


def test_a_peer_id_gives_back_its_key() -> None:
    n = Node()
    assert public_key_of(n.peer) == public_key_bytes(n.key)
    for bad in ("", "0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", n.peer[:-1]):
        with pytest.raises(ValueError, match="peer ID"):
            public_key_of(bad)


# -- delegations ----------------------------------------------------------------------

B, A, C = Node(), Node(), Node()


def delegation(signer: Node = B, *, forwarder: str | None = None, audience: str = A.peer,
               now: int = NOW, ttl_s: int = 60) -> str:
    return make_delegation(signer.key, forwarder=forwarder or signer.peer, audience=audience,
                           subject="alice", token=None, cert=None, now=now, ttl_s=ttl_s)


def test_a_delegation_round_trips_with_the_token_facts(tmp_path: Path) -> None:
    issuing = authority(tmp_path / "b")
    _, claims = issuing.create_token(subject="alice", roles=[Role.USER], ttl_s=3600, now=NOW,
                                     models=["m1"], requests_per_min=5, tokens_per_min=900)
    principal = Principal("alice", claims)
    text = B.creds.delegation(principal, audience=A.peer, now=NOW)
    d = read_delegation(text, peer=B.peer, audience=A.peer, now=NOW + 1)
    assert (d.forwarder, d.audience, d.subject) == (B.peer, A.peer, "alice")
    assert (d.issued_at, d.expires_at) == (NOW, NOW + 60)
    assert d.token == claims  # every fact: id, issuer, roles, models, rates, times
    cert = read_node_cert(d.cert or "", peer=B.peer, trusted=frozenset({issuer_id_of(B.issuer)}),
                          now=NOW)
    assert cert.issuer == issuer_id_of(B.issuer)
    assert "eyJ" not in jwt.decode(text, options={"verify_signature": False}).get("tid", "")


def test_an_anonymous_caller_has_no_token_facts() -> None:
    d = read_delegation(B.creds.delegation(None, audience=A.peer, now=NOW), peer=B.peer,
                        audience=A.peer, now=NOW)
    assert (d.subject, d.token) == ("anonymous", None)


@pytest.mark.parametrize(("text", "peer", "audience", "now", "why"), [
    # replayed to a third node: the audience is A, not C
    (delegation(), B.peer, C.peer, NOW, "another audience"),
    # signed by C's key but sent over B's connection
    (delegation(C), B.peer, A.peer, NOW, "signature does not verify"),
    # signed by C claiming to be B
    (delegation(C, forwarder=B.peer), B.peer, A.peer, NOW, "signature does not verify"),
    # B's key, but claiming another forwarder
    (delegation(B, forwarder=C.peer), B.peer, A.peer, NOW, "another forwarder"),
    (delegation(now=NOW - 61), B.peer, A.peer, NOW, "expired"),
    (delegation(now=NOW + 600), B.peer, A.peer, NOW, "in the future"),
    (delegation(ttl_s=3600), B.peer, A.peer, NOW, "lives 3600 s"),
    ("x" * 9000, B.peer, A.peer, NOW, "at most 8192"),
    ("not.a.jwt", B.peer, A.peer, NOW, "not a JWT"),
    (encode(B.key, {"iss": B.peer, "aud": A.peer}, typ="peerllm-token", kid="k"), B.peer,
     A.peer, NOW, "expected 'peerllm-delegation'"),
    (delegation(), "not-a-peer", A.peer, NOW, "no Ed25519 key"),
])
def test_every_bad_delegation_is_refused_naming_why(text: str, peer: str, audience: str,
                                                    now: int, why: str) -> None:
    with refused(Reason.BAD_DELEGATION) as err:
        read_delegation(text, peer=peer, audience=audience, now=now)
    assert why in err.value.message


@pytest.mark.parametrize(("claims", "why"), [
    ({"jti": "x y"}, "'jti'"),
    ({"jti": None}, "JWT ID must be a string"),
    ({"cert": 5}, "'cert'"),
    ({"sub": ""}, "'sub'"),
    ({"tid": "t1", "tiss": "ed25519:x", "roles": ["god"], "tiat": NOW, "texp": NOW + 9},
     "unknown role"),
    ({"tid": "t1", "tiss": "ed25519:x", "roles": ["user"], "tiat": NOW, "texp": "later"},
     "'iat' and 'exp'"),
])
def test_malformed_delegation_claims(claims: dict[str, object], why: str) -> None:
    base: dict[str, object] = {"iss": B.peer, "aud": A.peer, "iat": NOW, "exp": NOW + 60,
                               "jti": "j1", "sub": "alice"}
    text = encode(B.key, {**base, **claims}, typ=DELEGATION_TYP, kid=B.peer)
    with refused(Reason.BAD_DELEGATION) as err:
        read_delegation(text, peer=B.peer, audience=A.peer, now=NOW)
    assert why in err.value.message


def test_a_delegation_is_good_for_one_request() -> None:
    cache = ReplayCache(max_entries=2)
    first = read_delegation(delegation(), peer=B.peer, audience=A.peer, now=NOW)
    cache.use(first, now=NOW)
    with refused(Reason.BAD_DELEGATION, ) as err:
        cache.use(first, now=NOW + 1)
    assert "replay" in err.value.message
    cache.use(read_delegation(delegation(), peer=B.peer, audience=A.peer, now=NOW), now=NOW)
    with refused(Reason.RATE_LIMITED) as full:
        cache.use(read_delegation(delegation(), peer=B.peer, audience=A.peer, now=NOW), now=NOW)
    assert full.value.retry_after_s == 60
    # Expired entries make room, and cannot be replayed anyway (they fail the time check).
    cache.use(dataclasses.replace(first, id="later", expires_at=NOW + 200), now=NOW + 61)
    assert len(cache) == 1


# -- node certificates ----------------------------------------------------------------

def test_node_certificate_checks() -> None:
    trusted = frozenset({issuer_id_of(B.issuer)})
    cert = make_node_cert(B.issuer, B.peer, now=NOW, ttl_s=100)
    assert read_node_cert(cert, peer=B.peer, trusted=trusted, now=NOW).expires_at == NOW + 100
    with refused(Reason.UNTRUSTED_ISSUER):
        read_node_cert(cert, peer=B.peer, trusted=frozenset(), now=NOW)
    with refused(Reason.MALFORMED):  # B's certificate shown by C
        read_node_cert(cert, peer=C.peer, trusted=trusted, now=NOW)
    with refused(Reason.EXPIRED):
        read_node_cert(cert, peer=B.peer, trusted=trusted, now=NOW + 100)
    forged = make_node_cert(C.issuer, B.peer, now=NOW)
    header, payload, _ = forged.split(".")
    real_kid = cert.split(".")[0]  # B's issuer as kid, C's signature
    with refused(Reason.FORGED):
        read_node_cert(".".join([real_kid, payload, forged.split(".")[2]]), peer=B.peer,
                       trusted=trusted, now=NOW)
    assert header != real_kid


def test_credentials_renew_the_certificate_past_half_its_life() -> None:
    creds = NodeCredentials(node_key=B.key, peer_id=B.peer, issuer_key=B.issuer, cert_ttl_s=100)
    first = creds.certificate(now=NOW)
    assert creds.certificate(now=NOW + 49) == first
    assert creds.certificate(now=NOW + 50) != first


# -- receipts -------------------------------------------------------------------------

RECEIPT = Receipt(server=A.peer, client=B.peer, id="r1", request_id=7, subject="alice",
                  token_id="t1", model="m", tokens_in=5, tokens_out=3, gen_s=0.25,
                  issued_at=NOW)


def test_a_receipt_round_trips_and_binds_both_peers() -> None:
    text = A.creds.receipt(RECEIPT)
    assert read_receipt(text, server=A.peer, client=B.peer) == RECEIPT
    anonymous = dataclasses.replace(RECEIPT, token_id=None)
    assert read_receipt(make_receipt(A.key, anonymous), server=A.peer,
                        client=B.peer) == anonymous
    with refused(Reason.MALFORMED):  # kept by B, shown to C as if for C
        read_receipt(text, server=A.peer, client=C.peer)
    with refused(Reason.FORGED):  # A's receipt presented as C's
        read_receipt(text, server=C.peer, client=B.peer)
    with pytest.raises(ValueError, match="name us"):
        B.creds.receipt(RECEIPT)


@pytest.mark.parametrize("change", [{"tokens_in": -1}, {"gen_s": float("nan")},
                                    {"gen_s": True}, {"rid": "7"}, {"model": ""},
                                    {"tid": "a b"}, {"iss": C.peer}])
def test_malformed_receipts(change: dict[str, object]) -> None:
    claims = {**RECEIPT.to_claims(), **change}
    with refused(Reason.MALFORMED):
        read_receipt(encode(A.key, claims, typ="peerllm-receipt", kid=A.peer),
                     server=A.peer, client=B.peer)


# -- Authority.principal_for_peer -----------------------------------------------------

def forwarded(auth: Authority, text: str | None, *, peer: str = B.peer,
              serve_peers: str = "any", trusted_peers: tuple[str, ...] = (),
              now: int = NOW) -> Principal:
    return auth.principal_for_peer(text, peer=peer, self_peer=A.peer, serve_peers=serve_peers,
                                   trusted_peers=trusted_peers, now=now)


def alice(auth: Authority, **kw: object) -> Principal:
    _, claims = auth.create_token(subject="alice", roles=[Role.USER], ttl_s=3600, now=NOW,
                                  **kw)  # type: ignore[arg-type]
    return Principal("alice", claims)


def test_a_trusted_token_through_a_trusted_forwarder_is_the_users(tmp_path: Path) -> None:
    b = authority(tmp_path / "b")  # B's operator issues alice's token with B's issuer...
    a = authority(tmp_path / "a", trust=(b.issuer_key, B.issuer))  # ...A trusts it
    user = alice(b, models=["m"])
    got = forwarded(a, B.creds.delegation(user, audience=A.peer, now=NOW))
    assert got == Principal("alice", user.claims, via=B.peer)
    with refused(Reason.FORBIDDEN_MODEL):
        a.authorize(got, Role.USER, model="other")


def test_where_auth_is_required(tmp_path: Path) -> None:
    b = authority(tmp_path / "b")  # B's own tokens and certificate...
    a = authority(tmp_path / "a")  # ...mean nothing to A, which trusts neither
    user = alice(b)
    with refused(Reason.UNTRUSTED_ISSUER):
        forwarded(a, B.creds.delegation(user, audience=A.peer, now=NOW))
    with refused(Reason.MISSING):
        forwarded(a, B.creds.delegation(None, audience=A.peer, now=NOW))
    with refused(Reason.MISSING):
        forwarded(a, None)
    # A's own token, forwarded by B whom A does not trust to vouch for tokens...
    own = alice(a)
    with refused(Reason.UNTRUSTED_PEER) as err:
        forwarded(a, B.creds.delegation(own, audience=A.peer, now=NOW))
    assert "node certificate's issuer" in err.value.message and err.value.status == 403
    # ...unless B is on the allow-list.
    ok = forwarded(a, B.creds.delegation(own, audience=A.peer, now=NOW),
                   trusted_peers=(B.peer,))
    assert (ok.subject, ok.token_id, ok.via) == ("alice", own.token_id, B.peer)
    assert own.claims is not None
    a.revoke(own.claims.id, now=NOW)
    with refused(Reason.REVOKED):
        forwarded(a, B.creds.delegation(own, audience=A.peer, now=NOW), trusted_peers=(B.peer,))
    with refused(Reason.EXPIRED):
        later = NOW + 7200
        forwarded(a, B.creds.delegation(alice(a), audience=A.peer, now=later),
                  trusted_peers=(B.peer,), now=later)


def test_where_auth_is_not_required_an_unusable_token_is_anonymous(tmp_path: Path) -> None:
    a = authority(tmp_path / "a", required=False)
    stranger = alice(authority(tmp_path / "elsewhere"))
    assert forwarded(a, B.creds.delegation(stranger, audience=A.peer, now=NOW)) \
        == Principal("anonymous", via=B.peer)
    assert forwarded(a, None) == Principal("anonymous", via=B.peer)
    # A bad delegation is refused whatever the mode: it is a peer's bug or an attack.
    with refused(Reason.BAD_DELEGATION):
        forwarded(a, C.creds.delegation(None, audience=A.peer, now=NOW))
    replayed = B.creds.delegation(None, audience=A.peer, now=NOW)
    forwarded(a, replayed)
    with refused(Reason.BAD_DELEGATION):
        forwarded(a, replayed)


def test_serve_peers_trusted_serves_only_vouched_for_peers(tmp_path: Path) -> None:
    a = authority(tmp_path / "a", required=False, trust=(B.issuer,))
    assert forwarded(a, B.creds.delegation(None, audience=A.peer, now=NOW),
                     serve_peers="trusted").via == B.peer
    with refused(Reason.UNTRUSTED_PEER) as err:
        forwarded(a, C.creds.delegation(None, audience=A.peer, now=NOW), peer=C.peer,
                  serve_peers="trusted")
    assert C.peer in err.value.message
    with refused(Reason.UNTRUSTED_PEER):
        forwarded(a, None, peer=C.peer, serve_peers="trusted")
    assert forwarded(a, None, peer=C.peer, serve_peers="trusted",
                     trusted_peers=(C.peer,)).via == C.peer


# -- hostile input: a clear refusal, never a crash ---------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_keys = st.sampled_from(["iss", "aud", "iat", "exp", "jti", "sub", "tid", "tiss", "tiat",
                         "texp", "roles", "models", "rpm", "tpm", "cert", "rid", "model",
                         "tokens_in", "tokens_out", "gen_s"])
_good = {"iss": B.peer, "aud": A.peer, "iat": NOW, "exp": NOW + 60, "jti": "j",
         "sub": "alice", "tid": "t", "tiss": "ed25519:" + "A" * 43, "tiat": NOW,
         "texp": NOW + 60, "roles": ["user"], "rid": 1, "model": "m", "tokens_in": 1,
         "tokens_out": 1, "gen_s": 0.5}


@settings(deadline=None, max_examples=300)
@given(changes=st.dictionaries(_keys, _json, max_size=6),
       typ=st.sampled_from(["peerllm-delegation", "peerllm-receipt", "peerllm-token", "x"]))
def test_hostile_claims_signed_by_the_right_key_are_refused_cleanly(
        tmp_path_factory: pytest.TempPathFactory, changes: dict[str, object], typ: str) -> None:
    # Signed as raw JSON: PyJWT's encoder itself refuses some of these claims.
    payload = json.dumps({**_good, **changes}).encode()
    text = jwt.PyJWS().encode(payload, B.key, algorithm="EdDSA",
                              headers={"typ": typ, "kid": B.peer})
    a = _fuzz_authority(tmp_path_factory)
    try:
        forwarded(a, text)
    except AuthError:
        pass
    try:
        read_receipt(text, server=B.peer, client=A.peer)
    except AuthError:
        pass


@settings(deadline=None, max_examples=300)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(
    lambda b: ".".join(base64.urlsafe_b64encode(p).decode().rstrip("=")
                       for p in (b[:40], b[40:120], b[120:]))))
def test_garbage_delegations_and_receipts_are_refused_cleanly(
        tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    a = _fuzz_authority(tmp_path_factory)
    with pytest.raises(AuthError):
        forwarded(a, text)
    with pytest.raises(AuthError):
        read_receipt(text, server=B.peer, client=A.peer)
    with pytest.raises(AuthError):
        a.revocations.add(text, now=NOW)


_AUTHORITIES: dict[str, Authority] = {}


def _fuzz_authority(factory: pytest.TempPathFactory) -> Authority:
    # One per session: hypothesis runs many examples per test and keys are slow to make.
    if "a" not in _AUTHORITIES:
        _AUTHORITIES["a"] = authority(factory.mktemp("fuzz"), required=True)
    return _AUTHORITIES["a"]
