"""The one exception ↔ wire code ↔ HTTP status table, and who reads it."""

from __future__ import annotations

import pytest

from peerllm.api.generation import api_error
from peerllm.error_codes import (
    BUSY_CODES,
    ERROR_KINDS,
    REFUSAL_CODES,
    auth_rejection,
    http_status,
    rejection,
)
from peerllm.errors import (
    AuthError,
    InferenceCancelled,
    InferenceError,
    InferenceRejected,
    InferenceTimeout,
    InvalidInferenceRequest,
    LocalProtocolError,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
)
from peerllm.wire import infer as wi

ENGINE_ERRORS: list[tuple[InferenceError, str, int]] = [
    (ModelNotFound("m"), "model_not_found", 404),
    (ModelBusy("m", 2.5), "busy", 503),
    (InvalidInferenceRequest("m", "prompt longer than the context"), "bad_request", 400),
    (InferenceTimeout("m", 30.0), "timeout", 504),
    (InferenceCancelled("m", "shutting down"), "busy", 503),
    (ModelLoadError("m", "not a GGUF file"), "internal", 503),
]


@pytest.mark.parametrize(("exc", "code", "status"), ENGINE_ERRORS,
                         ids=[type(e).__name__ for e, _, _ in ENGINE_ERRORS])
def test_an_engine_error_means_the_same_locally_and_from_a_peer(
        exc: InferenceError, code: str, status: int) -> None:
    remote = rejection(exc)
    assert (remote.code, remote.retryable) == (code, ERROR_KINDS[code].retryable)
    assert code in wi.ERROR_CODES  # the wire can carry it
    local, relayed = api_error(exc), api_error(remote)
    assert local.status == relayed.status == status
    assert local.code == relayed.code == code
    if isinstance(exc, ModelBusy):
        assert remote.retry_after_s == 2.5 and local.retry_after_s == 2.5


def test_the_wire_sends_exactly_the_codes_of_the_table() -> None:
    assert frozenset(ERROR_KINDS) == wi.ERROR_CODES
    assert {c: k.retryable for c, k in ERROR_KINDS.items()} == wi.DEFAULT_RETRYABLE
    assert frozenset(c for c, k in ERROR_KINDS.items() if k.retryable) >= BUSY_CODES


def test_an_unknown_code_from_a_newer_peer_still_gets_a_status() -> None:
    assert http_status("quota_exceeded", retryable=True) == 503
    assert http_status("quota_exceeded", retryable=False) == 502
    err = api_error(InferenceRejected("quota_exceeded", "later", retryable=True))
    assert err.status == 503 and err.retry_after_s == 1.0


def test_our_own_protocol_error_is_a_400_not_the_peers_fault() -> None:
    err = api_error(LocalProtocolError("messages: at most 256"))
    assert err.status == 400 and "messages" in err.message


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (401, "unauthorized", False), (403, "forbidden", False), (429, "rate_limited", True)])
def test_an_auth_refusal_keeps_its_status_through_the_wire(status: int, code: str,
                                                           retryable: bool) -> None:
    exc = AuthError("revoked", "token t1 was revoked", status=status,
                    retry_after_s=2.0 if status == 429 else None)
    rejected = auth_rejection(exc)
    assert (rejected.code, rejected.retryable) == (code, retryable)
    assert rejected.message == "revoked: token t1 was revoked"  # the reason comes first
    assert code in wi.ERROR_CODES and code in REFUSAL_CODES
    assert api_error(rejected).status == status
    assert rejected.retry_after_s == exc.retry_after_s
