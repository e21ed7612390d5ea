"""``GET /v1/usage?by=subject|peer|model``: this node's usage totals (protocols/auth.md).

Rows come from ``node.usage`` (auth/usage.py): requests, prompt tokens in, completion
tokens out and the serving engine's wall seconds, by subject, by peer (with how it
relates to each request: ``served_by`` or ``forwarded_by``) or by model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth.usage import DIMENSIONS
from .generation import endpoint
from .openai import error_response
from .schemas import ApiError, Json

if TYPE_CHECKING:
    from ..node import Node


def usage_document(node: Node, by: str) -> Json:
    """The ``/v1/usage`` answer (also what ``peerllm usage --json`` prints)."""
    rows = node.usage.rows(by)
    total = {k: sum(r[k] for r in rows) for k in ("requests", "tokens_in", "tokens_out")}
    total["gen_s"] = round(sum(r["gen_s"] for r in rows), 6)
    return {"object": "usage", "node": {"peer_id": node.peer_id, "name": node.name},
            "by": by, "rows": rows, "total": total}


def routes(node: Node) -> list[Route]:
    async def usage(request: Request) -> Response:
        by = request.query_params.get("by", "subject")
        if by not in DIMENSIONS:
            raise ApiError(400, f"'by' must be one of {', '.join(DIMENSIONS)}, not {by!r}",
                           param="by", code="bad_request")
        return JSONResponse(usage_document(node, by))

    return [Route("/v1/usage", endpoint(usage, error_response), methods=["GET"])]
