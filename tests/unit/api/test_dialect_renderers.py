"""The Responses and Anthropic renderers write what the official clients' own types accept:
each body and each stream event is validated with the ``openai`` and ``anthropic``
packages' pydantic models (strictly, not the clients' lenient construction)."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as at
import openai.types.responses as ot
import pytest
from pydantic import TypeAdapter

from peerllm.api._responses_readers import responses_request
from peerllm.api.anthropic import MessagesRenderer, error_response, error_type
from peerllm.api.responses import ResponsesRenderer
from peerllm.api.schemas import ApiError
from peerllm.events import Done, FinishReason
from peerllm.mesh.routed import Routed

ROUTED = Routed(served_by="12D3KooWpeer", served_by_name="a", model="m", score=0.5)
CHUNKS = ("Hel", "lo", "!")


def done(finish: FinishReason = "stop") -> Done:
    return Done(finish_reason=finish, prompt_tokens=7, completion_tokens=3, ttft_ms=1.0,
                total_ms=2.0, model="m")


def events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in stream.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def stream_of(renderer: ResponsesRenderer | MessagesRenderer, end: Done) -> bytes:
    return (renderer.head(ROUTED) + b"".join(renderer.chunk(ROUTED, c) for c in CHUNKS)
            + renderer.tail(ROUTED, end))


# -- Responses --------------------------------------------------------------------------

RESPONSE_EVENT: TypeAdapter[Any] = TypeAdapter(ot.ResponseStreamEvent)


def responses_renderer() -> ResponsesRenderer:
    gen = responses_request({"model": "m", "input": "hi", "instructions": "Be brief."})
    return ResponsesRenderer(gen, instructions="Be brief.")


@pytest.mark.parametrize(("finish", "status"), [("stop", "completed"),
                                                ("length", "incomplete")])
def test_a_whole_response_is_an_openai_response(finish: FinishReason, status: str) -> None:
    body = responses_renderer().whole(ROUTED, "Hello!", done(finish))
    resp = ot.Response.model_validate_json(body, strict=False)
    assert resp.status == status and resp.output_text == "Hello!"
    assert resp.instructions == "Be brief."
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.output_tokens,
                                       resp.usage.total_tokens) == (7, 3, 10)
    assert (resp.incomplete_details is not None) == (status == "incomplete")


@pytest.mark.parametrize("finish", ["stop", "length"])
def test_every_streamed_event_is_an_openai_stream_event(finish: FinishReason) -> None:
    got = events(stream_of(responses_renderer(), done(finish)))
    parsed = [RESPONSE_EVENT.validate_python(data) for _, data in got]
    assert [name for name, _ in got] == [p.type for p in parsed]
    assert [p.sequence_number for p in parsed] == list(range(len(parsed)))
    text_done = next(p for p in parsed if p.type == "response.output_text.done")
    assert text_done.text == "".join(CHUNKS)
    last = parsed[-1]
    assert last.type == ("response.completed" if finish == "stop" else "response.incomplete")
    assert last.response.output_text == "".join(CHUNKS)


def test_a_late_failure_is_an_error_event() -> None:
    renderer = responses_renderer()
    renderer.head(ROUTED)
    [(name, data)] = events(renderer.stream_error(ApiError(502, "the peer failed",
                                                           code="peer_error")))
    event = RESPONSE_EVENT.validate_python(data)
    assert name == event.type == "error" and event.message == "the peer failed"
    assert event.sequence_number == 4  # after the head's four events


# -- Anthropic --------------------------------------------------------------------------

MESSAGE_EVENT: TypeAdapter[Any] = TypeAdapter(at.RawMessageStreamEvent)


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens")])
def test_a_whole_message_is_an_anthropic_message(finish: FinishReason, stop: str) -> None:
    msg = at.Message.model_validate_json(MessagesRenderer().whole(ROUTED, "Hello!",
                                                                  done(finish)))
    assert msg.stop_reason == stop and msg.stop_sequence is None
    assert [(b.type, b.text) for b in msg.content if b.type == "text"] == [("text", "Hello!")]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (7, 3)


def test_every_streamed_message_event_is_an_anthropic_event() -> None:
    got = events(stream_of(MessagesRenderer(), done()))
    parsed = [MESSAGE_EVENT.validate_python(data) for name, data in got if name != "ping"]
    assert [name for name, _ in got] == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 3,
        "content_block_stop", "message_delta", "message_stop"]
    assert "".join(p.delta.text for p in parsed if p.type == "content_block_delta") \
        == "".join(CHUNKS)
    delta = next(p for p in parsed if p.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn"
    assert (delta.usage.input_tokens, delta.usage.output_tokens) == (7, 3)


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (422, "invalid_request_error"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"),
    (503, "overloaded_error"), (504, "timeout_error")])
def test_errors_have_anthropics_shape_and_type(status: int, kind: str) -> None:
    resp = error_response(ApiError(status, "why", retry_after_s=2.0 if status == 503 else None))
    assert resp.status_code == status and error_type(status) == kind
    assert json.loads(bytes(resp.body)) == {"type": "error",
                                            "error": {"type": kind, "message": "why"}}
    assert ("retry-after" in resp.headers) == (status == 503)
    in_band = events(MessagesRenderer().stream_error(ApiError(status, "why")))
    assert in_band == [("error", {"type": "error", "error": {"type": kind, "message": "why"}})]

