"""The API's audit lines: one per inference request, one per model-management action.

Kept apart from the routes so that each route adds one call: ``inference_line`` when a
generation response ends (however it ends), ``embedding`` around an embedding request,
``managing`` around a load, unload or warmup; ``report_refusal`` for every request the
access guard refuses. The subject is the token's, from the principal the guard left in
the request's state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from starlette.requests import Request
from starlette.types import Scope

from ..audit import AuditSink
from ..audit import events as audit_events
from ..auth import Principal
from ..auth.reasons import RATE_SCOPES, auth_failure_of
from ..error_codes import rejection
from ..errors import AuthError, InferenceError, InferenceRejected, PeerLLMError
from ..events import Done
from ..mesh.routed import Routed
from .schemas import ApiError

if TYPE_CHECKING:
    from ..node import Node

_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")


def client_of(scope: Scope) -> str | None:
    """The HTTP client as ``host:port`` (None when the server does not say)."""
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def subject_of(scope: Scope) -> str | None:
    """The subject of the request's token, once the access guard has seen it."""
    principal = scope.get("state", {}).get("principal")
    subject = getattr(principal, "subject", None)
    return subject if isinstance(subject, str) else None


def outcome_of(exc: BaseException) -> str:
    """What an API caller got, as an audit outcome: the error's code."""
    if isinstance(exc, ApiError):
        return exc.code or f"http_{exc.status}"
    if isinstance(exc, InferenceError):
        return rejection(exc).code
    if isinstance(exc, InferenceRejected):
        return exc.code
    if isinstance(exc, PeerLLMError):  # e.g. ModelLoadError -> "model_load_error"
        return _CAMEL.sub("_", type(exc).__name__).lower()
    if isinstance(exc, trio.Cancelled):
        return audit_events.CANCELLED
    return audit_events.ERROR


def inference_line(audit: AuditSink, *, model: str, routed: Routed | None, done: Done | None,
                   err: ApiError | None, started: float, client: str | None,
                   subject: str | None = None) -> None:
    """The ``inference`` line of one API generation: ok (``done``), the error the client
    got (``err``), or cancelled (neither: the client went away mid-way)."""
    if err is not None:
        outcome = outcome_of(err)
    else:
        outcome = audit_events.OK if done is not None else audit_events.CANCELLED
    audit_events.inference(
        audit, model=model, served_by=(routed.served_by or None) if routed else None,
        forwarded_by=None, client=client, subject=subject,
        tokens_in=None if done is None else done.prompt_tokens,
        tokens_out=None if done is None else done.completion_tokens,
        duration_ms=(trio.current_time() - started) * 1000, outcome=outcome)


@dataclass
class Target:
    """The model an audited action turned out to be about (known once the body is read)."""

    model: str | None = None


@contextmanager
def _outcome(record: Callable[[str], None]) -> Iterator[None]:
    """Call ``record(outcome)`` when the block ends; its exception passes through."""
    outcome = audit_events.ERROR
    try:
        yield
        outcome = audit_events.OK
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        record(outcome)


@contextmanager
def managing(audit: AuditSink, scope: Scope, action: audit_events.ManagementAction,
             model: str | None = None) -> Iterator[Target]:
    """Write a ``model_management`` line for the action run in the block (set
    ``.model`` once the body is parsed); the block's exception passes through."""
    target = Target(model)

    def record(outcome: str) -> None:
        audit_events.model_management(audit, action=action, model=target.model,
                                      client=client_of(scope), outcome=outcome,
                                      subject=subject_of(scope))

    with _outcome(record):
        yield target


@dataclass
class EmbeddingTarget(Target):
    """An embedding request's model, and once answered who served it and its tokens."""

    served_by: str | None = None
    tokens_in: int | None = None


@contextmanager
def embedding(audit: AuditSink, scope: Scope) -> Iterator[EmbeddingTarget]:
    """Write an ``inference`` line (kind ``embedding``) for the embedding request run in
    the block (set ``.model`` once the body is read, ``.served_by`` and ``.tokens_in``
    once the mesh answered)."""
    target, started = EmbeddingTarget(), trio.current_time()

    def record(outcome: str) -> None:
        audit_events.inference(
            audit, kind="embedding", model=target.model,
            served_by=target.served_by if outcome == audit_events.OK else None,
            forwarded_by=None, client=client_of(scope), subject=subject_of(scope),
            tokens_in=target.tokens_in,
            tokens_out=None, duration_ms=(trio.current_time() - started) * 1000,
            outcome=outcome)

    with _outcome(record):
        yield target


def report_refusal(node: Node, request: Request, exc: AuthError,
                   principal: Principal | None) -> None:
    """A refused request: its metric and its audit line (never the token itself)."""
    client = client_of(request.scope)
    token_id = principal.token_id if principal is not None else None
    subject = principal.subject if principal is not None else None
    scope = next((s for r, s in RATE_SCOPES.items() if r.value == exc.reason), None)
    if scope is not None:
        node.metrics.observe_rate_limited(scope)
        audit_events.rate_limited(node.audit, scope=scope, subject=subject, token_id=token_id,
                                  client=client, retry_after_s=exc.retry_after_s)
        return
    failure = auth_failure_of(exc.reason)
    if failure is not None:
        node.metrics.observe_auth_failure(failure)
        audit_events.auth_failure(node.audit, reason=failure, client=client,
                                  token_id=token_id, route=request.url.path, subject=subject)
