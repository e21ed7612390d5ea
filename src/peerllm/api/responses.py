"""The OpenAI Responses API: ``POST /v1/responses``, text in and text out, routed like chat.

Shapes follow the OpenAI API reference and the ``openai`` package's types
(``openai.types.responses``), so ``client.responses.create`` works unchanged: one
``response`` object, or with ``stream`` an SSE stream of named events, each with its
``type`` and a ``sequence_number`` counting from 0::

    response.created · response.in_progress · response.output_item.added ·
    response.content_part.added · response.output_text.delta … ·
    response.output_text.done · response.content_part.done · response.output_item.done ·
    response.completed (response.incomplete when max_output_tokens cut the answer)

A failure after the stream started is an ``error`` event. Errors before it are the
OpenAI error object (``openai.error_response``). Responses are not stored.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..events import Done
from ..mesh.routed import Routed
from ._responses_readers import responses_request
from .access import principal_of, require_model
from .generation import SESSION_HEADER, GenerationResponse, endpoint, read_json
from .openai import _provenance as provenance  # one shape of "who served it" for all
from .openai import error_response
from .schemas import ApiError, Generation, Json

if TYPE_CHECKING:
    from ..node import Node

_STATUS: Final = {"stop": "completed", "length": "incomplete", "cancelled": "completed"}


def _usage(done: Done) -> Json:
    return {"input_tokens": done.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": done.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": done.prompt_tokens + done.completion_tokens}


class ResponsesRenderer:
    """One response: its ids, the text so far (for the ``done`` events) and the events'
    sequence numbers."""

    stream_media_type = "text/event-stream"

    def __init__(self, gen: Generation, *, instructions: str | None = None) -> None:
        self.gen = gen
        self.instructions = instructions or None
        self.id = "resp_" + secrets.token_hex(24)
        self.item_id = "msg_" + secrets.token_hex(24)
        self.created_at = int(time.time())
        self.text = ""
        self.seq = 0

    def _event(self, kind: str, **fields: object) -> bytes:
        data = json.dumps({"type": kind, "sequence_number": self.seq, **fields},
                          separators=(",", ":"))
        self.seq += 1
        return f"event: {kind}\ndata: {data}\n\n".encode()

    def _part(self, text: str) -> Json:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _item(self, status: str, text: str | None) -> Json:
        return {"id": self.item_id, "type": "message", "role": "assistant", "status": status,
                "content": [] if text is None else [self._part(text)]}

    def _response(self, routed: Routed, done: Done | None, text: str | None) -> Json:
        p = self.gen.request.params
        status = "in_progress" if done is None else _STATUS[done.finish_reason]
        obj: Json = {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete" else None,
            "instructions": self.instructions,
            "model": routed.model,
            "output": [] if done is None else [self._item(status, text or "")],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "temperature": p.temperature, "top_p": p.top_p,
            "max_output_tokens": p.max_tokens, "text": {"format": {"type": "text"}},
            "truncation": "disabled", "store": False, "metadata": {},
            "usage": None if done is None else _usage(done)}
        if done is not None:
            obj["completed_at"] = int(time.time()) if status == "completed" else None
            obj["peerllm"] = provenance(routed)
        return obj

    def head(self, routed: Routed) -> bytes:
        start = self._response(routed, None, None)
        where = {"output_index": 0}
        return (self._event("response.created", response=start)
                + self._event("response.in_progress", response=start)
                + self._event("response.output_item.added", item=self._item("in_progress", None),
                              **where)
                + self._event("response.content_part.added", item_id=self.item_id,
                              content_index=0, part=self._part(""), **where))

    def chunk(self, routed: Routed, text: str) -> bytes:
        self.text += text
        return self._event("response.output_text.delta", item_id=self.item_id, output_index=0,
                           content_index=0, delta=text, logprobs=[])

    def tail(self, routed: Routed, done: Done) -> bytes:
        final = self._response(routed, done, self.text)
        status = final["status"]
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return (self._event("response.output_text.done", text=self.text, logprobs=[], **where)
                + self._event("response.content_part.done", part=self._part(self.text),
                              **where)
                + self._event("response.output_item.done", output_index=0,
                              item=self._item(status, self.text))
                + self._event(f"response.{status}", response=final))

    def stream_error(self, err: ApiError) -> bytes:
        return self._event("error", code=err.code, message=err.message, param=err.param)

    def whole(self, routed: Routed, text: str, done: Done) -> bytes:
        return json.dumps(self._response(routed, done, text)).encode()

    def error(self, err: ApiError) -> Response:
        return error_response(err)


def routes(node: Node) -> list[Route]:
    async def create(request: Request) -> Response:
        body = await read_json(request)
        gen = responses_request(body, session_header=request.headers.get(SESSION_HEADER))
        require_model(request, node.authority, gen.request.model)
        renderer = ResponsesRenderer(gen, instructions=body.get("instructions"))
        return GenerationResponse(node, gen, renderer,
                                  principal=principal_of(request))

    return [Route("/v1/responses", endpoint(create, error_response), methods=["POST"])]
