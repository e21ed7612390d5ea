"""The API's audit helpers: the client as written, and what an error becomes as an outcome."""

from __future__ import annotations

import pytest
import trio

from peerllm.api.auditing import client_of, outcome_of
from peerllm.api.schemas import ApiError
from peerllm.errors import InferenceRejected, ModelBusy, ModelLoadError, NoRoute


@pytest.mark.parametrize(("client", "written"), [
    (("127.0.0.1", 5000), "127.0.0.1:5000"), (("::1", 5000), "[::1]:5000"), (None, None)])
def test_the_client_is_host_port(client: tuple[str, int] | None, written: str | None) -> None:
    assert client_of({"type": "http", "client": client}) == written


@pytest.mark.parametrize(("exc", "outcome"), [
    (ApiError(404, "no", code="model_not_found"), "model_not_found"),
    (ApiError(413, "big"), "http_413"),
    (ModelBusy("m", retry_after_s=1.0), "busy"),
    (InferenceRejected("too_many_streams", "full", retryable=True), "too_many_streams"),
    (ModelLoadError("m", "bad file"), "internal"),
    (NoRoute("m", reasons={}, known=False), "no_route"),
    (RuntimeError("bug"), "error"),
])
def test_an_error_is_its_code(exc: BaseException, outcome: str) -> None:
    assert outcome_of(exc) == outcome


async def test_a_cancelled_request_is_cancelled() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled) as err:
            await trio.sleep(1)
    assert outcome_of(err.value) == "cancelled"
