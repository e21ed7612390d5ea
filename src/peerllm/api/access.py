"""Who may call which route: the route → role table, and the guard that enforces it.

Every route of the API has exactly one required role, here (``ROUTE_ROLES``); building
the app fails for a route missing from the table, so a new route cannot ship unguarded.
The guard authenticates the bearer token (``auth.Authority``; ``credential_of`` reads
it from ``Authorization`` or ``x-api-key``), checks the role, counts
the request against the token's rate, and leaves the ``Principal`` on
``request.state.principal`` for the handlers, which check the model themselves
(``require_model``) once they have read it from the body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, cast

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import ANONYMOUS, Principal, Role
from ..errors import AuthError
from .generation import Handler, api_error
from .schemas import ApiError

if TYPE_CHECKING:
    from ..auth import Authority

R, U, OP, A = Role.READONLY, Role.USER, Role.OPERATOR, Role.ADMIN

ROUTE_ROLES: Final[dict[tuple[str, str], Role]] = {
    # the node and the mesh
    ("GET", "/v1/node/info"): R,
    ("GET", "/v1/node/status"): R,
    ("GET", "/v1/peers"): R,
    ("GET", "/v1/peers/lookup"): R,
    ("GET", "/v1/route"): R,
    ("GET", "/v1/models"): R,
    ("GET", "/v1/models/{model_id:path}"): R,
    ("GET", "/v1/usage"): R,
    ("GET", "/metrics"): R,
    ("GET", "/api/tags"): R,
    ("GET", "/api/ps"): R,
    ("POST", "/api/show"): R,
    ("GET", "/api/version"): R,
    # Ollama's "is it up" probe: readonly, not public, so a node that requires auth says
    # nothing to a caller without a token (anonymous callers have every role when auth
    # is off, which is when the probing tools run without tokens)
    ("GET", "/"): R,
    # inference
    ("POST", "/v1/chat/completions"): U,
    ("POST", "/v1/completions"): U,
    ("POST", "/v1/embeddings"): U,
    ("POST", "/v1/responses"): U,
    ("POST", "/v1/messages"): U,
    ("POST", "/api/chat"): U,
    ("POST", "/api/generate"): U,  # an empty prompt loads the model, as any request would
    ("POST", "/api/embed"): U,
    ("POST", "/api/embeddings"): U,
    # model management
    ("POST", "/v1/models/load"): OP,
    ("POST", "/v1/models/{model_id:path}/warmup"): OP,
    ("POST", "/v1/models/{model_id:path}/unload"): OP,
    ("POST", "/v1/models/{model_id:path}/replicas"): OP,  # the mesh's copies of it
    ("DELETE", "/v1/models/{model_id:path}"): OP,
    # getting models (api/pulls.py): pulls write to the disk, the list is a status
    ("POST", "/v1/models/pull"): OP,
    ("GET", "/v1/transfers"): R,
    ("POST", "/api/pull"): OP,
    ("DELETE", "/api/delete"): OP,
    # Ollama model management peerllm does not serve: a 501 (ollama_unsupported)
    ("POST", "/api/push"): OP,
    ("POST", "/api/create"): OP,
    ("POST", "/api/copy"): OP,
    # tokens
    ("GET", "/v1/auth/tokens"): A,
    ("POST", "/v1/auth/tokens"): A,
    ("DELETE", "/v1/auth/tokens/{token_id}"): A,
}
"""(method, route path) -> the least role that may call it."""

ErrorRenderer = Callable[[ApiError], Response]


def principal_of(request: Request) -> Principal:
    """The caller of a guarded route (anonymous outside a guard, e.g. in tests)."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else Principal(ANONYMOUS)


def credential_of(headers: Headers) -> str | None:
    """The request's credential as an Authorization value: ``Authorization`` itself, or
    else Anthropic's ``x-api-key`` (the ``anthropic`` client sends its key only there)
    as a bearer token. Both present: ``Authorization`` wins."""
    authorization = headers.get("authorization")
    if authorization is not None:
        return authorization
    api_key = (headers.get("x-api-key") or "").strip()
    return f"Bearer {api_key}" if api_key else None


RefusalHook = Callable[[Request, AuthError, Principal | None], None]
"""(request, refusal, the principal if the token was valid): metrics and audit."""


def require_model(request: Request, authority: Authority, model: str, *,
                  role: Role = Role.USER) -> None:
    """Raises AuthError(forbidden_model) if the caller's token does not cover ``model``,
    or (forbidden_role) if it has less than ``role``: for what a request asks beyond its
    route's role (Ollama's keep_alive manages the model, an operator's job)."""
    principal = principal_of(request)
    try:
        authority.authorize(principal, role, model=model)
    except AuthError as exc:
        hook = getattr(request.state, "on_refusal", None)
        if hook is not None:
            hook(request, exc, principal)
        raise


def guard_routes(routes: Sequence[Route], authority: Authority,
                 render: Callable[[str], ErrorRenderer],
                 on_refusal: RefusalHook | None = None) -> list[Route]:
    """``routes`` with every endpoint behind the guard for its role in ROUTE_ROLES.

    ``render(path)`` gives the error renderer in that path's API shape; ``on_refusal``
    is told of every refusal (audit, metrics).

    Raises:
        KeyError: a route (method, path) is not in ROUTE_ROLES.
    """
    guarded: list[Route] = []
    for route in routes:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            role = ROUTE_ROLES.get((method, route.path))
            if role is None:
                raise KeyError(f"route {method} {route.path} has no role in ROUTE_ROLES")
            endpoint = _guard(cast(Handler, route.endpoint), role, authority,
                              render(route.path), on_refusal)
            guarded.append(Route(route.path, endpoint, methods=[method], name=route.name))
    return guarded


def _guard(endpoint: Handler, role: Role, authority: Authority, render: ErrorRenderer,
           on_refusal: RefusalHook | None) -> Handler:
    async def guarded(request: Request) -> Response:
        now = time.time()
        principal: Principal | None = None
        try:
            principal = authority.authenticate(credential_of(request.headers), now=now)
            authority.authorize(principal, role)
            authority.admit(principal, now=now)
        except AuthError as exc:
            if on_refusal is not None:
                on_refusal(request, exc, principal)
            return render(api_error(exc))
        request.state.principal = principal
        request.state.on_refusal = on_refusal
        return await endpoint(request)

    return guarded
