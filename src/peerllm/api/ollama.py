"""Ollama-compatible routes: chat, generate, embed, tags, ps, show, version.

Shapes follow Ollama's API docs, so the official ``ollama`` client works unchanged:
NDJSON streams (one object per line, the last with ``done: true`` and timings in
nanoseconds) unless ``stream`` is false, and ``{"error": "message"}`` errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..auth import Role
from ..errors import ModelNotFound
from ..events import Done
from ..inference.engine import SamplingParams
from ..inference.specs import quant_from_filename
from ..mesh.routed import Routed
from ..wire.blob import digest_hex
from . import schemas
from .access import principal_of, require_model
from .auditing import managing
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

_FINISH: Final = {"stop": "stop", "length": "length", "cancelled": "stop"}
_PARAMS: Final = re.compile(r"(?<![a-z0-9])(\d+(?:\.\d+)?)([mb])(?![a-z])", re.IGNORECASE)
# A model without an idle time (keep_alive) is never unloaded; Ollama clients still want
# a time, so say "far away".
_NEVER: Final = timedelta(days=365)


def error_response(err: ApiError) -> Response:
    return JSONResponse({"error": err.message}, status_code=err.status,
                        headers=retry_after(err))


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _line(obj: Json) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _timings(done: Done) -> Json:
    ns = 1_000_000  # our times are ms; Ollama's are ns
    ttft = done.ttft_ms if done.ttft_ms is not None else done.total_ms
    return {"done_reason": _FINISH[done.finish_reason],
            "total_duration": int(done.total_ms * ns), "load_duration": 0,
            "prompt_eval_count": done.prompt_tokens, "prompt_eval_duration": int(ttft * ns),
            "eval_count": done.completion_tokens,
            "eval_duration": int(max(done.total_ms - ttft, 0.0) * ns)}


class _Renderer:
    """``/api/chat`` (``chat=True``: message objects) or ``/api/generate`` (response text)."""

    stream_media_type = "application/x-ndjson"

    def __init__(self, *, chat: bool) -> None:
        self.chat = chat

    def _obj(self, routed: Routed, text: str, *, done: bool) -> Json:
        obj: Json = {"model": routed.model, "created_at": _now()}
        if self.chat:
            obj["message"] = {"role": "assistant", "content": text}
        else:
            obj["response"] = text
        obj["done"] = done
        return obj

    def head(self, routed: Routed) -> bytes:
        return b""

    def chunk(self, routed: Routed, text: str) -> bytes:
        return _line(self._obj(routed, text, done=False))

    def tail(self, routed: Routed, done: Done) -> bytes:
        return _line(self._obj(routed, "", done=True) | _timings(done))

    def stream_error(self, err: ApiError) -> bytes:
        return _line({"error": err.message})

    def whole(self, routed: Routed, text: str, done: Done) -> bytes:
        return json.dumps(self._obj(routed, text, done=True) | _timings(done)).encode()

    def error(self, err: ApiError) -> Response:
        return error_response(err)


# -- model facts for tags / ps / show ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Facts:
    size_bytes: int
    context_size: int | None
    chat_format: str | None
    digest: str | None = None  # sha256:<hex> of the file, once known


def _facts(node: Node, model: str) -> _Facts:
    """What we know of ``model``: from our engine if we serve it, else a peer's node-info."""
    engine = node.engine
    if engine is not None:
        try:
            spec = engine.registry.spec(model)
        except ModelNotFound:
            pass
        else:
            st = engine.registry.status(model)
            size = spec.size_bytes or _file_size(st.path) or _file_size(spec.path)
            return _Facts(size_bytes=size, context_size=st.context_size,
                          chat_format=st.chat_format, digest=st.digest)
    for e in node.registry.entries():
        for m in e.info.models if e.info is not None else ():
            if m.id == model:
                # The file's size, as ours above; a node older than file_bytes only
                # says how much memory the model needs.
                return _Facts(size_bytes=m.file_bytes or m.size_bytes or 0,
                              context_size=m.context_size,
                              chat_format=None, digest=m.digest)
    return _Facts(size_bytes=0, context_size=None, chat_format=None)


def _file_size(path: Path | None) -> int:
    try:
        return 0 if path is None else path.stat().st_size
    except OSError:
        return 0


def _details(model: str) -> Json:
    family = re.split(r"[-_:.]", model, maxsplit=1)[0] or model
    m = _PARAMS.search(model)
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": f"{m.group(1)}{m.group(2).upper()}" if m else "",
            "quantization_level": quant_from_filename(model) or ""}


def _parameter_count(model: str) -> int | None:
    m = _PARAMS.search(model)
    if m is None:
        return None
    return int(float(m.group(1)) * (1e6 if m.group(2).lower() == "m" else 1e9))


def _digest(digest: str | None) -> str:
    """Ollama's form: the file's sha256 as bare hex; "" while it is not computed yet (a
    made-up value would look like a version a client could pin)."""
    return "" if digest is None else digest_hex(digest)


def _tag(node: Node, model: str, modified: str) -> Json:
    facts = _facts(node, model)
    return {"name": model, "model": model, "modified_at": modified,
            "size": facts.size_bytes, "digest": _digest(facts.digest),
            "details": _details(model)}


def _show(node: Node, model: str, modified: str) -> Json:
    facts = _facts(node, model)
    details = _details(model)
    arch = details["family"]
    info: Json = {"general.architecture": arch, "general.basename": model,
                  "general.file_type": details["quantization_level"]}
    count = _parameter_count(model)
    if count is not None:
        info["general.parameter_count"] = count
    if facts.chat_format is not None:
        info["peerllm.chat_format"] = facts.chat_format
    if facts.context_size is not None:
        info[f"{arch}.context_length"] = facts.context_size
    defaults = SamplingParams()
    return {"modelfile": f"# Served by PeerLLM {__version__}\nFROM {model}\n",
            "parameters": f"temperature {defaults.temperature}\ntop_p {defaults.top_p}\n"
                          f"top_k {defaults.top_k}\nrepeat_penalty {defaults.repeat_penalty}",
            # llama.cpp applies the GGUF's own chat template (or the named chat format,
            # given in model_info), not a Go template; this is what raw prompts get.
            "template": "{{ .Prompt }}",
            "details": details, "model_info": info, "capabilities": ["completion"],
            "modified_at": modified}


def routes(node: Node) -> list[Route]:
    modified = datetime.fromtimestamp(node.started_at, UTC).isoformat().replace("+00:00", "Z")

    def session(request: Request) -> str | None:
        return request.headers.get(SESSION_HEADER)

    def require_known(model: str) -> None:
        if model not in node.mesh_models():
            raise ApiError(404, f"model {model!r} not found", param="model",
                           code="model_not_found")

    def keep_alive(request: Request, model: str, seconds: float | None) -> None:
        # Only this node's own copy: a forwarded request's keep_alive is not carried to
        # the peer that serves it (protocols/inference.md). Unloading is an operator's
        # call (DELETE /v1/models/{id}), so setting when to unload is one too.
        if seconds is None:
            return
        require_model(request, node.authority, model, role=Role.OPERATOR)
        if node.engine is not None:
            try:
                node.engine.registry.keep_alive(model, seconds)
            except ModelNotFound:
                pass

    async def chat(request: Request) -> Response:
        gen = schemas.ollama_chat(await read_json(request), session_header=session(request))
        require_model(request, node.authority, gen.request.model)
        keep_alive(request, gen.request.model, gen.keep_alive_s)
        return GenerationResponse(node, gen, _Renderer(chat=True),
                                  principal=principal_of(request))

    async def generate(request: Request) -> Response:
        body = await read_json(request)
        gen: Generation | None = schemas.ollama_generate(body, session_header=session(request))
        if gen is None:  # Ollama's "load the model" call (or with keep_alive 0, "unload")
            model = str(body["model"]).strip()
            seconds = schemas.keep_alive(body)
            unload = seconds == 0
            with managing(node.audit, request.scope, "unload" if unload else "load", model):
                require_model(request, node.authority, model)
                require_known(model)
                keep_alive(request, model, seconds)  # first: it checks the role
                if node.engine is not None:
                    try:
                        if unload:
                            await node.engine.registry.unload(model)
                        else:
                            await node.engine.registry.load(model)
                    except ModelNotFound:
                        pass  # served by peers only: they load it on the first request
            return JSONResponse({"model": model, "created_at": _now(), "response": "",
                                 "done": True, "done_reason": "unload" if unload else "load"})
        require_model(request, node.authority, gen.request.model)
        keep_alive(request, gen.request.model, gen.keep_alive_s)
        return GenerationResponse(node, gen, _Renderer(chat=False),
                                  principal=principal_of(request))

    async def embed(request: Request) -> Response:
        started = trio.current_time()
        req, placed = await embeddings_of(node, request, schemas.ollama_embed)
        keep_alive(request, req.model, req.keep_alive_s)
        total_ns = int((trio.current_time() - started) * 1e9)
        return JSONResponse({"model": req.model, "embeddings": placed.vectors,
                             "total_duration": total_ns, "load_duration": 0,
                             "prompt_eval_count": placed.prompt_tokens},
                            headers=served_headers(placed))

    async def embeddings(request: Request) -> Response:
        """The legacy ``/api/embeddings``: one ``prompt``, one ``embedding``."""
        _, placed = await embeddings_of(node, request, schemas.ollama_embeddings)
        return JSONResponse({"embedding": placed.vectors[0]}, headers=served_headers(placed))

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [_tag(node, m, modified)
                                        for m in sorted(node.mesh_models())]})

    async def ps(request: Request) -> Response:
        models: list[Json] = []
        if node.engine is not None:
            registry = node.engine.registry
            now, clock = datetime.now(UTC), trio.current_time()
            for st in registry.list():
                if st.state == "loaded":
                    at = registry.expires_at(st.id)
                    when = now + (_NEVER if at is None else timedelta(seconds=at - clock))
                    expires = when.isoformat().replace("+00:00", "Z")
                    models.append({"name": st.id, "model": st.id, "size": st.memory_bytes,
                                   "digest": _digest(st.digest),
                                   "details": _details(st.id),
                                   "expires_at": expires, "size_vram": 0,
                                   "context_length": st.context_size})
        return JSONResponse({"models": models})

    async def show(request: Request) -> Response:
        model = schemas.ollama_model_name(await read_json(request))
        require_known(model)
        return JSONResponse(_show(node, model, modified))

    async def version(request: Request) -> Response:
        return JSONResponse({"version": __version__})

    def wrap(fn: Handler) -> Handler:
        return endpoint(fn, error_response)

    return [
        Route("/api/chat", wrap(chat), methods=["POST"]),
        Route("/api/generate", wrap(generate), methods=["POST"]),
        Route("/api/embed", wrap(embed), methods=["POST"]),
        Route("/api/embeddings", wrap(embeddings), methods=["POST"]),
        Route("/api/tags", wrap(tags), methods=["GET"]),
        Route("/api/ps", wrap(ps), methods=["GET"]),
        Route("/api/show", wrap(show), methods=["POST"]),
        Route("/api/version", wrap(version), methods=["GET"]),
    ]
