"""Getting models: ``POST /api/pull`` (Ollama), ``POST /v1/models/pull`` (SSE) and
``GET /v1/transfers``; and letting one go: ``DELETE /api/delete`` (Ollama).

A pull runs in the node's Pulls service, not in the request: a client that goes away
leaves it running (a rerun joins it, or resumes its partial file). The response waits
until the file is found (or not) before its status line, so "no such model" and "no
space" are proper 4xx/5xx answers; after that, progress streams and a failure is an
in-band error object, as Ollama's clients expect.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import (
    DigestMismatch,
    ModelNotFound,
    NoSource,
    NotEnoughSpace,
    SourceFailed,
    TransferError,
)
from ..mesh.pulls import Pulls, Transfer, ref_kind
from ..transfer.http import shown_url
from ..transfer.ports import Progress
from ..wire import blob as wb
from . import ollama, openai, schemas
from ._readers import bad, opt_bool
from .access import require_model
from .auditing import managing
from .generation import Handler, endpoint, read_json
from .schemas import ApiError, Json

if TYPE_CHECKING:
    from ..node import Node

NDJSON: Final = "application/x-ndjson"
SSE: Final = "text/event-stream"


def transfer_error(exc: TransferError) -> ApiError:
    """The HTTP answer to a failed pull (the status says whose problem it is)."""
    if isinstance(exc, NotEnoughSpace):
        return ApiError(507, exc.message, code="not_enough_space")
    if isinstance(exc, NoSource):
        if not exc.reasons:
            return ApiError(404, exc.message, param="model", code="model_not_found")
        why = "; ".join(f"{k}: {v}" for k, v in exc.reasons.items())
        return ApiError(502, f"{exc.message} ({why})", code="no_source")
    if isinstance(exc, DigestMismatch):
        return ApiError(502, exc.message, code="digest_mismatch")
    if isinstance(exc, SourceFailed):
        return ApiError(502, exc.message, code=f"source_{exc.fault}")
    return ApiError(502, exc.message, code="transfer_failed")


def source_docs(p: Progress) -> list[Json]:
    return [{"label": s.label, "kind": s.kind, "bytes": s.bytes, "rate_bps": s.rate_bps,
             "state": s.state, "reason": s.reason} for s in p.sources]


def transfer_doc(t: Transfer) -> Json:
    """One row of ``GET /v1/transfers`` (and the body of a pull's progress events)."""
    p = t.progress
    return {"id": t.id, "ref": t.shown, "model": t.result.id if t.result else t.model_id,
            "digest": t.digest, "origin": t.origin, "state": p.state, "total": p.total,
            "completed": p.completed, "resumed": p.resumed, "rate_bps": p.rate_bps,
            "eta_s": p.eta_s, "sources": source_docs(p), "error": p.error,
            "started_at": t.started_at, "finished_at": t.finished_at}


class OllamaPhases:
    """Progress as Ollama's pull lines, each phase once and in order, whatever updates a
    slow reader skipped: pulling manifest, pulling <digest>, verifying sha256 digest,
    writing manifest, success."""

    _ORDER: Final = ("resolving", "downloading", "verifying", "installing", "done")

    def __init__(self) -> None:
        self._reached = -1
        self._pulled = 0  # bytes the last "pulling" line said

    def lines(self, p: Progress) -> list[Json]:
        if p.state == "failed":
            return [{"error": p.error or "the pull failed"}]
        now = self._ORDER.index(p.state)
        out: list[Json] = []
        if now == self._reached == 1:
            out.append(self._pulling(p, completed=p.completed))
        for phase in range(self._reached + 1, now + 1):
            out.extend(self._enter(phase, p))
        if now > 1 and self._pulled < (p.total or 0):
            # Past the download: its last line says all of it came, whatever was skipped.
            out.insert(len(out) - (now - max(self._reached, 1)),
                       self._pulling(p, completed=p.total or 0))
        self._reached = max(self._reached, now)
        return out

    def _enter(self, phase: int, p: Progress) -> list[Json]:
        if phase == 0:
            return [{"status": "pulling manifest"}]
        if phase == 1:
            return [self._pulling(p, completed=p.completed)]
        return [{"status": ("verifying sha256 digest", "writing manifest", "success")[phase - 2]}]

    def _pulling(self, p: Progress, *, completed: int) -> Json:
        self._pulled = completed
        if p.digest is None:  # a URL whose digest is known only at the end
            return {"status": "pulling file", "total": p.total, "completed": completed}
        return {"status": f"pulling {wb.short_digest(p.digest)}", "digest": p.digest,
                "total": p.total, "completed": completed}


def _line(obj: Json) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _event(obj: Json | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def pull_request(body: Mapping[str, Any], *, ollama_names: bool) -> tuple[str, str | None, bool]:
    """(ref, digest, stream) of a pull body; ApiError(400) naming the field."""
    key = "name" if ollama_names and body.get("model") is None \
        and body.get("name") is not None else "model"
    ref = body.get(key)
    if ref is None:
        raise bad(key, "required (a model id, a sha256: digest or a URL)",
                  code="missing_model")
    if not isinstance(ref, str):
        raise bad(key, f"expected a string, got {type(ref).__name__}")
    try:
        ref_kind(ref)
    except ValueError as exc:
        raise bad(key, str(exc).removeprefix("model: ")) from None
    digest = body.get("digest")
    if digest is not None:
        if not isinstance(digest, str) or not wb.is_digest(digest):
            raise bad("digest", "expected sha256:<64 hex digits>")
        digest = wb.parse_digest(digest)
    opt_bool(body, "insecure", "insecure", False)  # read, and ignored: TLS is the URL's
    return ref.strip(), digest, opt_bool(body, "stream", "stream", True)


def routes(node: Node) -> list[Route]:
    def service() -> Pulls:
        if node.pulls is None:
            raise ApiError(503, "this node does not pull models (it was started without "
                                "a model store)", code="pulls_unavailable")
        return node.pulls

    async def started(request: Request, *, ollama_names: bool) -> tuple[Transfer, bool]:
        with managing(node.audit, request.scope, "pull") as act:
            ref, digest, stream = pull_request(await read_json(request),
                                               ollama_names=ollama_names)
            act.model = shown_url(ref)
            if ref_kind(ref) == "model":
                require_model(request, node.authority, ref)
            t = service().start(ref, digest=digest)
            await t.wait_resolved()
            if t.error is not None:
                raise transfer_error(t.error)
            return t, stream

    async def finished(t: Transfer) -> Transfer:
        await t.done.wait()
        if t.error is not None:
            raise transfer_error(t.error)
        return t

    async def ollama_pull(request: Request) -> Response:
        t, stream = await started(request, ollama_names=True)
        if not stream:
            await finished(t)
            return JSONResponse({"status": "success"})

        async def lines() -> AsyncIterator[bytes]:
            phases = OllamaPhases()
            async with aclosing(t.changes()) as changes:
                async for p in changes:
                    for obj in phases.lines(p):
                        yield _line(obj)

        return StreamingResponse(lines(), media_type=NDJSON)

    async def pull(request: Request) -> Response:
        t, stream = await started(request, ollama_names=False)
        if not stream:
            return JSONResponse(transfer_doc(await finished(t)))

        async def events() -> AsyncIterator[bytes]:
            phases = OllamaPhases()
            async with aclosing(t.changes()) as changes:
                async for p in changes:
                    status = [obj for obj in phases.lines(p) if "status" in obj]
                    if p.state == "failed" and t.error is not None:
                        err = transfer_error(t.error)
                        yield _event({"error": {"message": err.message, "code": err.code,
                                                "type": "server_error"}})
                        return
                    doc = transfer_doc(t) | (status[-1] if status else {})
                    del doc["error"]  # an event with "error" is a failure, even a null one
                    yield _event(doc)
            yield _event("[DONE]")

        return StreamingResponse(events(), media_type=SSE)

    async def delete(request: Request) -> Response:
        with managing(node.audit, request.scope, "delete") as act:
            body = await read_json(request, optional=True)
            model = schemas.ollama_model_name(body)
            act.model = model
            require_model(request, node.authority, model)
            query = request.query_params.get("cancel", "false").lower()
            if query not in ("true", "false", "1", "0"):
                raise bad("cancel", "expected true or false (query)")
            cancel = opt_bool(body, "cancel", "cancel", False) or query in ("true", "1")
            try:
                deleted = await node.delete_model(model, cancel=cancel)
            except ModelNotFound:
                raise ApiError(404, f"model {model!r} not found on this node", param="model",
                               code="model_not_found") from None
            return JSONResponse({"status": "success", "file_deleted": deleted})

    async def transfers(request: Request) -> Response:
        pulls = node.pulls
        return JSONResponse({"transfers": [transfer_doc(t) for t in
                                           (pulls.transfers() if pulls else [])]})

    def wrap(fn: Handler, on_error: Callable[[ApiError], Response]) -> Handler:
        return endpoint(fn, on_error)

    return [
        Route("/api/pull", wrap(ollama_pull, ollama.error_response), methods=["POST"]),
        Route("/v1/models/pull", wrap(pull, openai.error_response), methods=["POST"]),
        Route("/v1/transfers", wrap(transfers, openai.error_response), methods=["GET"]),
        Route("/api/delete", wrap(delete, ollama.error_response), methods=["DELETE"]),
    ]
