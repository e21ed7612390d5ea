"""OpenAI-compatible routes: chat/completions, completions, embeddings, models (list).

Shapes follow the OpenAI API reference, so the official ``openai`` client works
unchanged: SSE streams of ``chat.completion.chunk`` / ``text_completion`` objects ending
in ``data: [DONE]``, and ``{"error": {"message", "type", "param", "code"}}`` errors.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..events import Done
from ..mesh.routed import Routed
from ..scheduling.candidates import Candidate
from . import schemas
from .access import principal_of, require_model
from .embeddings import embed as embeddings_of
from .embeddings import served_headers
from .generation import (
    SESSION_HEADER,
    GenerationResponse,
    Handler,
    endpoint,
    read_json,
    retry_after,
)
from .schemas import ApiError, Generation, Json

if TYPE_CHECKING:
    from ..node import Node

# Our finish reasons -> OpenAI's ("cancelled" only reaches a client on shutdown).
_FINISH: Final = {"stop": "stop", "length": "length", "cancelled": "stop"}


def error_response(err: ApiError) -> Response:
    kind = "invalid_request_error" if err.status < 500 else "server_error"
    return JSONResponse({"error": {"message": err.message, "type": kind, "param": err.param,
                                   "code": err.code}},
                        status_code=err.status, headers=retry_after(err))


def _usage(done: Done) -> Json:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _provenance(routed: Routed) -> Json:
    """Who finally served the answer, and whether it was resumed on another replica."""
    return {"served_by": routed.served_by, "served_by_name": routed.served_by_name,
            "resumed": routed.resumed, "score": routed.score}


_TEXT_MARK: Final = "\x00peerllm-text\x00"  # never a model's text: json escapes NUL


def _sse(obj: Json) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Renderer:
    """Chat (``chat=True``) or text completions, streamed as SSE or whole."""

    stream_media_type = "text/event-stream"

    def __init__(self, gen: Generation, *, chat: bool) -> None:
        self.chat = chat
        self.include_usage = gen.include_usage
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self._template: tuple[str, bytes, bytes] | None = None  # (model, before, after)

    def _chunk(self, routed: Routed, choice: Json) -> Json:
        obj: Json = {"id": self.id, "object": self.object + (".chunk" if self.chat else ""),
                     "created": self.created, "model": routed.model,
                     "system_fingerprint": None, "choices": [choice]}
        if self.include_usage:
            obj["usage"] = None  # only the extra last chunk carries the usage
        return obj

    def _choice(self, text: str | None, finish: str | None, *, role: bool = False) -> Json:
        if self.chat:
            delta: Json = {} if text is None else {"content": text}
            if role:
                delta = {"role": "assistant", "content": ""}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    def head(self, routed: Routed) -> bytes:
        return _sse(self._chunk(routed, self._choice(None, None, role=True))) if self.chat \
            else b""

    def chunk(self, routed: Routed, text: str) -> bytes:
        # Every chunk of a stream is the same JSON but for its text: render it once and
        # splice each text in (a json.dumps of the whole object per token, otherwise).
        if self._template is None or self._template[0] != routed.model:
            rendered = _sse(self._chunk(routed, self._choice(_TEXT_MARK, None)))
            before, _, after = rendered.partition(json.dumps(_TEXT_MARK).encode())
            self._template = (routed.model, before, after)
        _, before, after = self._template
        return before + json.dumps(text).encode() + after

    def tail(self, routed: Routed, done: Done) -> bytes:
        final = self._chunk(routed, self._choice(None, _FINISH[done.finish_reason]))
        final["peerllm"] = _provenance(routed)
        out = _sse(final)
        if self.include_usage:
            last = self._chunk(routed, {})
            last["choices"] = []
            last["usage"] = _usage(done)
            out += _sse(last)
        return out + b"data: [DONE]\n\n"

    def stream_error(self, err: ApiError) -> bytes:
        kind = "invalid_request_error" if err.status < 500 else "server_error"
        return _sse({"error": {"message": err.message, "type": kind, "param": err.param,
                               "code": err.code}}) + b"data: [DONE]\n\n"

    def whole(self, routed: Routed, text: str, done: Done) -> bytes:
        finish = _FINISH[done.finish_reason]
        choice: Json = ({"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish} if self.chat else
                        {"index": 0, "text": text, "logprobs": None, "finish_reason": finish})
        return json.dumps({"id": self.id, "object": self.object, "created": self.created,
                           "model": routed.model, "system_fingerprint": None,
                           "choices": [choice], "usage": _usage(done),
                           "peerllm": _provenance(routed)}).encode()

    def error(self, err: ApiError) -> Response:
        return error_response(err)


def _floats_b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def model_object(node: Node, model: str, candidates: Sequence[Candidate] | None = None
                 ) -> Json:
    """An OpenAI model object, plus who serves it under ``peerllm.providers`` (each with
    the digest of the file it serves: replicas may serve different versions, and that
    file's size, ``file_bytes``, as the node says)."""
    cands = node.mesh_models().get(model, []) if candidates is None else candidates
    files = served_files(node, model)
    return {"id": model, "object": "model", "created": int(node.started_at),
            "owned_by": "peerllm", "peerllm": {"providers": [
                {"peer_id": c.peer_id, "name": c.name, "local": c.local, "loaded": c.loaded,
                 "digest": files.get(c.peer_id, (None, None))[0],
                 "file_bytes": files.get(c.peer_id, (None, None))[1]}
                for c in cands]}}


def served_files(node: Node, model: str) -> dict[str, tuple[str | None, int | None]]:
    """Peer id -> (digest, size) of the file each node serves ``model`` from (None:
    unsaid, or not computed yet): ours from the registry, peers' from their node-info."""
    out: dict[str, tuple[str | None, int | None]] = {}
    for e in node.registry.entries():
        for m in e.info.models if e.info is not None else ():
            if m.id == model:
                out[e.peer_id] = (m.digest, m.file_bytes)
    for st in node.model_statuses():
        if st.id == model:
            out[node.peer_id] = (st.digest, st.file_bytes)
    return out


def routes(node: Node) -> list[Route]:
    def session(request: Request) -> str | None:
        return request.headers.get(SESSION_HEADER)

    async def chat_completions(request: Request) -> Response:
        gen = schemas.openai_chat(await read_json(request), session_header=session(request))
        require_model(request, node.authority, gen.request.model)
        return GenerationResponse(node, gen, _Renderer(gen, chat=True),
                                  principal=principal_of(request))

    async def completions(request: Request) -> Response:
        gen = schemas.openai_completion(await read_json(request),
                                        session_header=session(request))
        require_model(request, node.authority, gen.request.model)
        return GenerationResponse(node, gen, _Renderer(gen, chat=False),
                                  principal=principal_of(request))

    async def embeddings(request: Request) -> Response:
        req, placed = await embeddings_of(node, request, schemas.openai_embeddings)
        data: list[Json] = [{"object": "embedding", "index": i,
                             "embedding": _floats_b64(v) if req.base64 else v}
                            for i, v in enumerate(placed.vectors)]
        tokens = placed.prompt_tokens
        return JSONResponse({"object": "list", "data": data, "model": req.model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                            headers=served_headers(placed))

    async def list_models(request: Request) -> Response:
        mesh = node.mesh_models()
        data = [model_object(node, m, mesh[m]) for m in sorted(mesh)]
        return JSONResponse({"object": "list", "data": data})

    def wrap(fn: Handler) -> Handler:
        return endpoint(fn, error_response)

    return [
        Route("/v1/chat/completions", wrap(chat_completions), methods=["POST"]),
        Route("/v1/completions", wrap(completions), methods=["POST"]),
        Route("/v1/embeddings", wrap(embeddings), methods=["POST"]),
        Route("/v1/models", wrap(list_models), methods=["GET"]),
    ]
