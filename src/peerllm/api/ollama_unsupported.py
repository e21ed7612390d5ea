"""Ollama's root probe, and the Ollama model-management endpoints peerllm does not serve yet.

Ollama answers ``GET /`` with the plain text ``Ollama is running``; tools and health
checks probe it before anything else. ``/api/push``, ``/api/create`` and ``/api/copy``
answer a 501 in Ollama's error shape saying what to do instead: a clear refusal, where a
404 or 405 would read as "this is not an Ollama server". (``/api/pull`` and
``/api/delete`` are served by api/pulls.py.)
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .generation import Handler
from .ollama import error_response
from .schemas import ApiError

ROOT_TEXT: Final = "Ollama is running"

NOT_YET: Final[dict[str, tuple[str, str]]] = {
    # path -> (method, what the caller asked for, in the message)
    "/api/push": ("POST", "pushing models"),
    "/api/create": ("POST", "creating models"),
    "/api/copy": ("POST", "copying models"),
}
"""The endpoints that answer 501 (each in ROUTE_ROLES as ``operator``)."""

_INSTEAD: Final = ("copy the GGUF file to the node and start it with --model "
                   "(or list it under models.paths), or get it with `peerllm pull`")


def routes() -> list[Route]:
    async def root(request: Request) -> Response:
        return PlainTextResponse(ROOT_TEXT)

    def refuse(what: str) -> Handler:
        message = f"{what} is not supported yet by peerllm; {_INSTEAD}"

        async def handler(request: Request) -> Response:
            return error_response(ApiError(501, message, code="not_implemented"))

        return handler

    return [Route("/", root, methods=["GET"]),
            *(Route(path, refuse(what), methods=[method])
              for path, (method, what) in NOT_YET.items())]
