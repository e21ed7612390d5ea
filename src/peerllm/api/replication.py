"""``POST /v1/models/{id}/replicas`` {"replicas": N}: how many copies of a model this
node asks the mesh to keep (protocols/replication.md; `peerllm replicate`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..audit import AuditSink
from ..errors import ModelNotFound
from ..mesh.replica_settings import check_replicas
from . import _readers as r
from .access import require_model
from .auditing import managing
from .generation import endpoint, read_json
from .openai import error_response
from .schemas import ApiError, Json

if TYPE_CHECKING:
    from ..auth import Authority


class ReplicaNode(Protocol):
    """What the route needs of the node (peerllm.Node)."""

    audit: AuditSink
    authority: Authority

    def set_replicas(self, model_id: str, replicas: int) -> Json:
        """Raises ModelNotFound (not served here), ValueError (bad N), OSError."""
        ...


def replicas_of(body: Mapping[str, Any]) -> int:
    """The body's ``replicas``: required, a whole number 0-MAX_REPLICAS."""
    if "replicas" not in body:
        raise r.bad("replicas", "required: how many copies the mesh keeps (0: no target)")
    try:
        return check_replicas(r.opt_int(body, "replicas", "replicas"))
    except ValueError as exc:  # its message starts with "replicas:"
        raise ApiError(400, str(exc), param="replicas", code="invalid_value") from exc


def routes(node: ReplicaNode) -> list[Route]:
    async def set_replicas(request: Request) -> Response:
        model = str(request.path_params["model_id"])
        with managing(node.audit, request.scope, "replicas", model):
            require_model(request, node.authority, model)
            replicas = replicas_of(await read_json(request))
            try:
                doc = node.set_replicas(model, replicas)
            except ModelNotFound:
                raise ApiError(404, f"model {model!r} is not served by this node: set its "
                                    "replicas on a node that serves it",
                               param="model", code="model_not_found") from None
            except OSError as exc:  # ours: the data dir is not writable
                raise ApiError(500, f"cannot save the replica target: {exc.strerror}",
                               code="internal") from exc
            return JSONResponse(doc)

    return [Route("/v1/models/{model_id:path}/replicas", endpoint(set_replicas, error_response),
                  methods=["POST"])]
