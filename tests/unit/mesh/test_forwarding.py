"""The serving side of forwarded requests (mesh/forwarding.py) over a real Authority:
refusals become wire codes the error frame can carry; a served request is charged,
receipted and counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peerllm.auth import Authority, Principal, Role
from peerllm.auth.credentials import NodeCredentials
from peerllm.auth.issuers import issuer_id_of
from peerllm.auth.receipts import read_receipt
from peerllm.auth.usage import UsageLedger
from peerllm.config import AuthConfig
from peerllm.errors import InferenceRejected
from peerllm.events import Done
from peerllm.identity import peer_id_of, public_key_bytes
from peerllm.mesh.forwarding import ForwardedRequests
from peerllm.wire import infer as wi

NOW = 1_800_000_000.0
SAMPLING = wi.Sampling(max_tokens=4, temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)


def creds() -> NodeCredentials:
    key = Ed25519PrivateKey.generate()
    return NodeCredentials(node_key=key, peer_id=peer_id_of(public_key_bytes(key)),
                           issuer_key=Ed25519PrivateKey.generate())


A, B = creds(), creds()


def serving(tmp_path: Path, **auth: object) -> tuple[ForwardedRequests, Authority, UsageLedger]:
    authority = Authority(data_dir=tmp_path, config=AuthConfig(**auth))  # type: ignore[arg-type]
    usage = UsageLedger(None)
    return ForwardedRequests(authority=authority, credentials=A, usage=usage, serve_peers="any",
                             trusted_peers=(B.peer_id,), clock=lambda: NOW), authority, usage


def request(principal: Principal | None, *, model: str = "m", rid: int = 5) -> wi.InferRequest:
    return wi.InferRequest(request_id=rid, model=model, messages=None, prompt="hi",
                           sampling=SAMPLING, deadline_ms=1000,
                           auth=B.delegation(principal, audience=A.peer_id, now=NOW))


def alice(authority: Authority, **limits: object) -> Principal:
    _, claims = authority.create_token(subject="alice", roles=[Role.USER], ttl_s=3600,
                                       now=int(NOW), **limits)  # type: ignore[arg-type]
    return Principal("alice", claims)


def test_a_served_request_is_charged_receipted_and_counted(tmp_path: Path) -> None:
    fwd, authority, usage = serving(tmp_path, required=True)
    user = alice(authority, models=["m"])
    req = request(user)
    principal = fwd.principal(req, B.peer_id)
    assert principal == Principal("alice", user.claims, via=B.peer_id)
    fwd.admit(principal)
    done = Done(finish_reason="stop", prompt_tokens=3, completion_tokens=2, ttft_ms=1.0,
                total_ms=250.0, model="m")
    out = fwd.finished(req, B.peer_id, principal, done)
    assert out.receipt is not None and out.prompt_tokens == 3
    r = read_receipt(out.receipt, server=A.peer_id, client=B.peer_id)
    assert (r.request_id, r.subject, r.token_id, r.model, r.tokens_in, r.tokens_out,
            r.gen_s, r.issued_at) == (5, "alice", principal.token_id, "m", 3, 2, 0.25,
                                      int(NOW))
    rec = usage.recent()[-1]
    assert (rec.kind, rec.subject, rec.peer, rec.receipt, rec.verified) == (
        "served", "alice", B.peer_id, out.receipt, True)


@pytest.mark.parametrize(("case", "code", "reason"), [
    ("anonymous", "unauthorized", "missing"),
    ("model", "forbidden", "forbidden_model"),
    ("role", "forbidden", "forbidden_role"),
])
def test_refusals_carry_the_wire_code_and_the_reason(tmp_path: Path, case: str, code: str,
                                                     reason: str) -> None:
    fwd, authority, _ = serving(tmp_path, required=True)
    if case == "anonymous":
        req = request(None)
    elif case == "model":
        req = request(alice(authority, models=["other"]))
    else:
        _, claims = authority.create_token(subject="ro", roles=[Role.READONLY], ttl_s=60,
                                           now=int(NOW))
        req = request(Principal("ro", claims))
    with pytest.raises(InferenceRejected) as err:
        fwd.principal(req, B.peer_id)
    assert (err.value.code, err.value.message.split(":")[0]) == (code, reason)


def test_a_token_far_over_its_rate_gets_a_retry_after_the_wire_can_carry(
        tmp_path: Path) -> None:
    fwd, authority, _ = serving(tmp_path, required=True)
    slow = alice(authority, tokens_per_min=10)
    principal = fwd.principal(request(slow, rid=1), B.peer_id)
    fwd.admit(principal)
    fwd.finished(request(slow, rid=1), B.peer_id, principal, Done(
        finish_reason="length", prompt_tokens=10_000, completion_tokens=10_000, ttft_ms=None,
        total_ms=1.0, model="m"))
    with pytest.raises(InferenceRejected) as err:
        fwd.admit(fwd.principal(request(slow, rid=2), B.peer_id))
    assert (err.value.code, err.value.retryable) == ("rate_limited", True)
    assert err.value.retry_after_s == wi.MAX_DEADLINE_MS / 1000  # hours owed, capped
    wi.message_to_map(wi.Error(request_id=2, code="rate_limited", message=err.value.message,
                               retryable=True,
                               retry_after_ms=int(err.value.retry_after_s * 1000)))


def test_issuer_trust_is_the_serving_nodes(tmp_path: Path) -> None:
    other = Authority(data_dir=tmp_path / "other", config=AuthConfig())
    fwd, _, _ = serving(tmp_path / "a", required=True,
                        trusted_issuers=(issuer_id_of(other.issuer_key),))
    assert fwd.principal(request(alice(other)), B.peer_id).subject == "alice"
    stranger = Authority(data_dir=tmp_path / "stranger", config=AuthConfig())
    with pytest.raises(InferenceRejected) as err:
        fwd.principal(request(alice(stranger)), B.peer_id)
    assert err.value.message.startswith("untrusted_issuer: ")
