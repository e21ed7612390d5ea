"""Model management routes (load, unload, warm up, status) and ``GET /metrics``.

Management acts on this node's own engine only; for a model that only peers serve,
the status route lists them, and the others say where the model lives.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..auth import Role
from ..errors import ModelNotFound
from ..inference.registry import ModelStatus
from ..metrics import BreakerSample, ModelSample
from . import schemas
from .access import principal_of, require_model
from .auditing import managing
from .generation import Handler, endpoint, read_json
from .openai import error_response, model_object
from .schemas import ApiError, Json

if TYPE_CHECKING:
    from ..inference.engine import Engine
    from ..node import Node

logger = logging.getLogger(__name__)

DEFAULT_WARMUP_TOKENS = 16


def status_document(st: ModelStatus, *, full_path: bool = False) -> Json:
    """What ``/v1/models/{id}`` says of a local model. ``path`` is the file's name, or its
    absolute path with ``full_path`` (admins only: a path tells a caller about the
    machine's layout and user names)."""
    path = None if st.path is None else str(st.path) if full_path else st.path.name
    error = st.error
    if error is not None and st.path is not None and not full_path:
        error = error.replace(str(st.path), st.path.name)  # load errors name the file
    return {"state": st.state, "type": st.type, "memory_bytes": st.memory_bytes,
            "active": st.active, "queued": st.queued, "requests": st.requests,
            "tokens_generated": st.tokens_generated, "tokens_per_second": st.tokens_per_second,
            "ttft_ms": st.ttft_ms, "load_seconds": st.load_seconds, "error": error,
            "path": path, "quant": st.quant,
            "chat_format": st.chat_format, "context_size": st.context_size,
            "tags": list(st.tags), "digest": st.digest, "replicas": st.replicas}


def _not_here(node: Node, model: str) -> ApiError:
    names = [c.name or c.peer_id for c in node.mesh_models().get(model, []) if not c.local]
    if names:
        return ApiError(404, f"model {model!r} is not served by this node; it is on "
                             f"{', '.join(names)} (manage it there)",
                        param="model", code="model_not_local")
    return ApiError(404, f"model {model!r} is not served by any node in the mesh",
                    param="model", code="model_not_found")


def routes(node: Node) -> list[Route]:
    def local_engine(model: str) -> Engine:
        engine = node.engine
        if engine is None:
            raise _not_here(node, model)
        try:
            engine.registry.spec(model)
        except ModelNotFound:
            raise _not_here(node, model) from None
        return engine

    def warmup_default(engine: Engine) -> int:
        return engine.registry.config.warmup_tokens or DEFAULT_WARMUP_TOKENS

    def answer(request: Request, model: str, st: ModelStatus) -> Response:
        # An admin *token*: without auth every anonymous caller "may" everything, and
        # the path is then shown to no one (the operator has the config at hand).
        principal = principal_of(request)
        admin = principal.claims is not None and principal.may(Role.ADMIN)
        return JSONResponse(model_object(node, model) | {"local": True}
                            | status_document(st, full_path=admin))

    async def load(request: Request) -> Response:
        with managing(node.audit, request.scope, "load") as act:
            req = schemas.load_request(await read_json(request))
            act.model = req.model
            require_model(request, node.authority, req.model)
            engine = local_engine(req.model)
            st = await engine.registry.load(req.model)
            if req.warmup:
                st = await engine.registry.warmup(req.model, warmup_default(engine))
            return answer(request, req.model, st)

    async def unload(request: Request) -> Response:
        model = str(request.path_params["model_id"])
        with managing(node.audit, request.scope, "unload", model):
            require_model(request, node.authority, model)
            engine = local_engine(model)
            await engine.registry.unload(model)
            return answer(request, model, engine.registry.status(model))

    async def warmup(request: Request) -> Response:
        model = str(request.path_params["model_id"])
        with managing(node.audit, request.scope, "warmup", model):
            require_model(request, node.authority, model)
            engine = local_engine(model)
            tokens = schemas.warmup_tokens(await read_json(request, optional=True),
                                           warmup_default(engine))
            return answer(request, model, await engine.registry.warmup(model, tokens))

    async def status(request: Request) -> Response:
        model = str(request.path_params["model_id"])
        providers = node.mesh_models().get(model)
        engine = node.engine
        if engine is not None:
            try:
                return answer(request, model, engine.registry.status(model))
            except ModelNotFound:
                pass
        if not providers:
            raise _not_here(node, model)
        return JSONResponse(model_object(node, model) | {"local": False})

    refresh_failed = False

    def refresh_gauges() -> None:
        """Set the gauges from the node's state now (right before the scrape)."""
        m = node.metrics
        if node.engine is not None:
            m.set_models(
                ModelSample(model=st.id, load_seconds=st.load_seconds,
                            memory_bytes=st.memory_bytes if st.state == "loaded" else 0,
                            active=st.active, queued=st.queued)
                for st in node.engine.registry.list())
        states: dict[str, int] = {}
        for peer in node.peers():
            state = str(peer.get("state", "unknown"))
            states[state] = states.get(state, 0) + 1
        m.set_peers(states)
        m.set_breakers(BreakerSample(peer_id=e.peer_id, name=e.name or "",
                                     state=node.router.breakers.state(e.peer_id))
                       for e in node.registry.entries())
        m.set_served_streams(node.infer_server.statistics().active_streams)
        opened = node.infer_client.statistics()
        m.set_opened_streams(active=opened.active, idle=opened.idle)
        m.set_node_info(name=node.name, peer_id=node.peer_id, version=__version__)

    async def metrics(request: Request) -> Response:
        nonlocal refresh_failed
        try:
            refresh_gauges()
        except Exception:  # a scrape must never 500: serve the counters, stale gauges
            if not refresh_failed:
                refresh_failed = True
                logger.exception("refreshing the /metrics gauges failed; serving the "
                                 "last values")
        body, content_type = node.metrics.render()
        return Response(body, headers={"content-type": content_type})

    def wrap(fn: Handler) -> Handler:
        return endpoint(fn, error_response)

    return [
        Route("/v1/models/load", wrap(load), methods=["POST"]),
        Route("/v1/models/{model_id:path}/warmup", wrap(warmup), methods=["POST"]),
        Route("/v1/models/{model_id:path}/unload", wrap(unload), methods=["POST"]),
        Route("/v1/models/{model_id:path}", wrap(unload), methods=["DELETE"]),
        Route("/v1/models/{model_id:path}", wrap(status), methods=["GET"]),
        Route("/metrics", wrap(metrics), methods=["GET"]),
    ]
