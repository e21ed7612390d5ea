"""Routes of the node API: node info, status, peers and lookups (JSON)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import (
    anthropic,
    management,
    ollama,
    ollama_unsupported,
    openai,
    pulls,
    replication,
    responses,
    tokens,
    usage,
)
from .access import ErrorRenderer, guard_routes
from .auditing import report_refusal
from .limits import RequestLimits
from .origin import BrowserGuard, BrowserPolicy
from .schemas import ApiError

if TYPE_CHECKING:
    from ..node import Node


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    # OpenAI's error shape, so every client of ours parses errors one way.
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status)


class NodeHeaders:
    """ASGI middleware: every response says which node answered."""

    def __init__(self, app: ASGIApp, *, node_id: str, node_name: str) -> None:
        self.app = app
        self.extra = [(b"x-peerllm-node-id", node_id.encode()),
                      (b"x-peerllm-node-name", node_name.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + self.extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


def renderer_for(path: str) -> ErrorRenderer:
    """Errors in the shape of the API a path belongs to (Ollama's under /api/,
    Anthropic's for /v1/messages, OpenAI's elsewhere)."""
    if path.startswith("/api/"):
        return ollama.error_response
    if path == "/v1/messages":
        return anthropic.error_response
    return openai.error_response


def build_app(node: Node) -> ASGIApp:
    async def node_info(request: Request) -> Response:
        return JSONResponse(node.info_document())

    async def node_status(request: Request) -> Response:
        return JSONResponse(node.status())

    async def peers(request: Request) -> Response:
        return JSONResponse({"self": node.info_document(), "peers": node.peers()})

    async def route(request: Request) -> Response:
        model = request.query_params.get("model")
        if not model:
            return _error(400, "the query parameter 'model' is required")
        return JSONResponse(node.explain(model))

    async def lookup(request: Request) -> Response:
        name = request.query_params.get("name")
        model = request.query_params.get("model")
        if bool(name) == bool(model):
            return _error(400, "give exactly one of the query parameters 'name' or 'model'")
        if name:
            found = await node.find_by_name(name)
            if found is None:
                return _error(404, f"no node named {name!r} found", "not_found_error")
            return JSONResponse({"name": found.name, "peer_id": found.peer_id,
                                 "id": found.node_id, "addrs": list(found.addrs),
                                 "models": list(found.models)})
        assert model is not None  # narrowed by the xor check above
        providers = await node.find_providers(model)
        return JSONResponse({"model": model, "providers": [
            {"peer_id": pid, "addrs": addrs} for pid, addrs in providers]})

    async def not_found(request: Request, exc: Exception) -> Response:
        # Unknown paths and methods too answer in the shape of the API the path belongs
        # to: an Ollama client reads {"error": "..."} and nothing else.
        render = renderer_for(request.url.path)
        if isinstance(exc, HTTPException):
            code = "not_found" if exc.status_code == 404 else "method_not_allowed" \
                if exc.status_code == 405 else "bad_request"
            response = render(ApiError(exc.status_code,
                                       f"{request.method} {request.url.path}: {exc.detail}",
                                       code=code))
            response.headers.update(exc.headers or {})  # 405's Allow
            return response
        return render(ApiError(500, "internal error", code="internal"))

    handlers: dict[Any, Any] = {HTTPException: not_found}
    routes = guard_routes([
        Route("/v1/node/info", node_info, methods=["GET"]),
        Route("/v1/node/status", node_status, methods=["GET"]),
        Route("/v1/peers", peers, methods=["GET"]),
        Route("/v1/peers/lookup", lookup, methods=["GET"]),
        Route("/v1/route", route, methods=["GET"]),
        *openai.routes(node),
        *responses.routes(node),
        *anthropic.routes(node),
        *pulls.routes(node),  # before management's /v1/models/{model_id:path} routes
        *replication.routes(node),
        *management.routes(node),
        *ollama.routes(node),
        *ollama_unsupported.routes(),
        *tokens.routes(node),
        *usage.routes(node),
    ], node.authority, renderer_for,
        lambda request, exc, principal: report_refusal(node, request, exc, principal))
    app = Starlette(routes=routes, exception_handlers=handlers)
    # The browser guard is outermost: a refused request reaches nothing, not even the
    # node headers (origin.py). The limits count every request that gets past it.
    api = node.config.api
    limited = RequestLimits(app, body_timeout_s=api.body_timeout_s,
                            max_open=api.max_open_requests, render=renderer_for)
    return BrowserGuard(NodeHeaders(limited, node_id=node.identity.node_id,
                                    node_name=node.name),
                        policy=BrowserPolicy.from_config(api))
