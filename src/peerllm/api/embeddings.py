"""What the embedding routes of both dialects share: read the body, check the caller may
use the model, place the batch in the mesh (audited), and say who served it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from ..errors import PeerLLMError
from ..mesh.embedding import PlacedEmbeddings
from .access import principal_of, require_model
from .auditing import embedding
from .generation import api_error, read_json
from .schemas import Embedding

if TYPE_CHECKING:
    from ..node import Node


async def embed(node: Node, request: Request,
                parse: Callable[[Mapping[str, Any]], Embedding]
                ) -> tuple[Embedding, PlacedEmbeddings]:
    """The parsed request and its vectors, computed wherever in the mesh the model is.

    Raises:
        ApiError: a bad body, a caller who may not use the model, or what
            ``Node.embed`` raised, as the caller gets it.
    """
    with embedding(node.audit, request.scope) as target:
        req = parse(await read_json(request))
        target.model = req.model
        require_model(request, node.authority, req.model)
        try:
            placed = await node.embed(req.model, req.inputs, principal=principal_of(request))
        except PeerLLMError as exc:
            # As the caller will get it (an unknown model is a 404 model_not_found, not
            # "no route"), so the audit line says the same.
            raise api_error(exc) from exc
        target.served_by, target.tokens_in = placed.served_by, placed.prompt_tokens
    return req, placed


def served_headers(placed: PlacedEmbeddings) -> dict[str, str]:
    """The ``x-peerllm-served-by`` headers of a generation, for an embedding answer."""
    return {"x-peerllm-served-by": placed.served_by,
            "x-peerllm-served-by-name": placed.served_by_name.encode(
                "ascii", "replace").decode("ascii")}
