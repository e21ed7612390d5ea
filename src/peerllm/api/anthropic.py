"""The Anthropic Messages API: ``POST /v1/messages``, text in and text out, routed like chat.

Shapes follow Anthropic's API reference, so the official ``anthropic`` client works
unchanged (its key arrives as ``x-api-key``, which the access guard reads as a bearer
token: ``access.credential_of``; ``anthropic-version`` is accepted and not needed). One
``message`` object, or with ``stream`` an SSE stream of named events::

    message_start · content_block_start · ping · content_block_delta (text_delta) … ·
    content_block_stop · message_delta (stop_reason, usage) · message_stop

and errors as ``{"type": "error", "error": {"type", "message"}}``, also in-band as an
``error`` event once a stream has started. The input token count is known only when the
generation ends, so ``message_start`` says 0 and ``message_delta`` carries it.

The engine does not say whether a generation stopped at its end-of-turn token or at one
of ``stop_sequences``, so ``stop_reason`` is ``end_turn`` for both and
``stop_sequence`` is null.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..events import Done
from ..mesh.routed import Routed
from ._anthropic_readers import messages_request
from .access import principal_of, require_model
from .generation import SESSION_HEADER, GenerationResponse, endpoint, read_json, retry_after
from .openai import _provenance as provenance  # one shape of "who served it" for all
from .schemas import ApiError, Json

if TYPE_CHECKING:
    from ..node import Node

_STOP: Final = {"stop": "end_turn", "length": "max_tokens", "cancelled": "end_turn"}
ERROR_TYPES: Final = {400: "invalid_request_error", 401: "authentication_error",
                      403: "permission_error", 404: "not_found_error",
                      413: "request_too_large", 429: "rate_limit_error",
                      503: "overloaded_error", 504: "timeout_error"}
"""HTTP status -> Anthropic's error type; other 4xx are invalid_request_error, other 5xx
api_error."""


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def _error_body(err: ApiError) -> Json:
    return {"type": "error", "error": {"type": error_type(err.status), "message": err.message}}


def error_response(err: ApiError) -> Response:
    return JSONResponse(_error_body(err), status_code=err.status, headers=retry_after(err))


def _sse(kind: str, obj: Json) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


class MessagesRenderer:
    """One message, streamed as Anthropic's events or whole."""

    stream_media_type = "text/event-stream"

    def __init__(self) -> None:
        self.id = "msg_" + secrets.token_hex(12)

    def _message(self, routed: Routed, text: str | None, done: Done | None) -> Json:
        return {"id": self.id, "type": "message", "role": "assistant", "model": routed.model,
                "content": [] if text is None else [{"type": "text", "text": text}],
                "stop_reason": None if done is None else _STOP[done.finish_reason],
                "stop_sequence": None,
                "usage": {"input_tokens": done.prompt_tokens if done else 0,
                          "output_tokens": done.completion_tokens if done else 0}}

    def head(self, routed: Routed) -> bytes:
        return (_sse("message_start", {"type": "message_start",
                                       "message": self._message(routed, None, None)})
                + _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
                + _sse("ping", {"type": "ping"}))

    def chunk(self, routed: Routed, text: str) -> bytes:
        return _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": text}})

    def tail(self, routed: Routed, done: Done) -> bytes:
        return (_sse("content_block_stop", {"type": "content_block_stop", "index": 0})
                + _sse("message_delta", {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP[done.finish_reason], "stop_sequence": None},
                    "usage": {"input_tokens": done.prompt_tokens,
                              "output_tokens": done.completion_tokens}})
                + _sse("message_stop", {"type": "message_stop"}))

    def stream_error(self, err: ApiError) -> bytes:
        return _sse("error", _error_body(err))

    def whole(self, routed: Routed, text: str, done: Done) -> bytes:
        obj = self._message(routed, text, done)
        obj["peerllm"] = provenance(routed)
        return json.dumps(obj).encode()

    def error(self, err: ApiError) -> Response:
        return error_response(err)


def routes(node: Node) -> list[Route]:
    async def create(request: Request) -> Response:
        gen = messages_request(await read_json(request),
                               session_header=request.headers.get(SESSION_HEADER))
        require_model(request, node.authority, gen.request.model)
        return GenerationResponse(node, gen, MessagesRenderer(),
                                  principal=principal_of(request))

    return [Route("/v1/messages", endpoint(create, error_response), methods=["POST"])]
