"""Token management routes (admin): issue, list and revoke this node's issuer's tokens."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..audit import events as audit_events
from ..auth import Role, TokenClaims
from ..auth.tokens import TOKEN_ID
from .access import principal_of
from .generation import Handler, endpoint, read_json
from .openai import error_response
from .schemas import ApiError, Json

if TYPE_CHECKING:
    from ..node import Node

MAX_TTL_S = 400 * 86400
DEFAULT_TTL_S = 30 * 86400


def token_document(claims: TokenClaims, *, revoked: bool) -> Json:
    """What is shown of an issued token (never the token itself)."""
    return {"id": claims.id, "subject": claims.subject, "issuer": claims.issuer,
            "roles": [r.label for r in claims.roles],
            "models": None if claims.models is None else list(claims.models),
            "requests_per_min": claims.requests_per_min,
            "tokens_per_min": claims.tokens_per_min, "issued_at": claims.issued_at,
            "expires_at": claims.expires_at, "revoked": revoked}


def _opt_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise ApiError(400, f"{key}: expected a whole number {low}..{high}", param=key)
    return value


def token_request(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``Authority.create_token`` from a POST body.

    Raises:
        ApiError(400): naming the field.
    """
    role = body.get("role", "user")
    if not isinstance(role, str):
        raise ApiError(400, "role: expected a role name", param="role")
    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        raise ApiError(400, f"role: {exc}", param="role") from None
    subject = body.get("name", "user")
    if not isinstance(subject, str) or not subject.strip():
        raise ApiError(400, "name: expected a non-empty string", param="name")
    models = body.get("models")
    if models is not None and (not isinstance(models, list)
                               or not all(isinstance(m, str) and m for m in models)):
        raise ApiError(400, "models: expected a list of model ids", param="models")
    ttl = _opt_int(body, "ttl_s", 1, MAX_TTL_S)
    return {"subject": subject.strip(), "roles": [parsed], "models": models,
            "ttl_s": DEFAULT_TTL_S if ttl is None else ttl,
            "requests_per_min": _opt_int(body, "requests_per_min", 1, 10**9),
            "tokens_per_min": _opt_int(body, "tokens_per_min", 1, 10**9)}


def routes(node: Node) -> list[Route]:
    authority = node.authority

    async def create(request: Request) -> Response:
        args = token_request(await read_json(request))
        try:
            token, claims = authority.create_token(now=int(time.time()), **args)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        audit_events.token_created(
            node.audit, token_id=claims.id, subject=claims.subject,
            roles=[r.label for r in claims.roles], models=claims.models,
            expires_at=claims.expires_at, by=principal_of(request).subject)
        return JSONResponse(token_document(claims, revoked=False) | {"token": token},
                            status_code=201)

    async def list_tokens(request: Request) -> Response:
        return JSONResponse({"issuer": authority.issuer_id, "tokens": [
            token_document(c, revoked=authority.is_revoked(c))
            for c in authority.ledger.all()]})

    async def revoke(request: Request) -> Response:
        token_id = str(request.path_params["token_id"])
        if not TOKEN_ID.fullmatch(token_id):
            raise ApiError(400, "token id: expected 1-64 of [A-Za-z0-9_-]", param="token_id")
        rev = authority.revoke(token_id, now=int(time.time()))
        audit_events.token_revoked(node.audit, token_id=token_id,
                                   by=principal_of(request).subject)
        return JSONResponse({"id": rev.token_id, "issuer": rev.issuer, "revoked": True,
                             "until": rev.expires_at})

    def wrap(fn: Handler) -> Handler:
        return endpoint(fn, error_response)

    return [
        Route("/v1/auth/tokens", wrap(create), methods=["POST"]),
        Route("/v1/auth/tokens", wrap(list_tokens), methods=["GET"]),
        Route("/v1/auth/tokens/{token_id}", wrap(revoke), methods=["DELETE"]),
    ]
