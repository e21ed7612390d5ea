"""The API's audit lines: one per inference request, one per model-management action.

Kept apart from the routes so that each route adds one call: ``inference_line`` when a
generation response ends (however it ends), ``managing`` around a load, unload or
warmup. The subject field stays None until the API knows who asked (tokens).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import trio
from starlette.types import Scope

from ..audit import AuditSink
from ..audit import events as audit_events
from ..error_codes import rejection
from ..errors import InferenceError, InferenceRejected, PeerLLMError
from ..events import Done
from ..mesh.routed import Routed
from .schemas import ApiError

_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")


def client_of(scope: Scope) -> str | None:
    """The HTTP client as ``host:port`` (None when the server does not say)."""
    client = scope.get("client")
    if not client:
        return None
    return f"{client[0]}:{client[1]}"


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
                   err: ApiError | None, started: float, client: str | None) -> None:
    """The ``inference`` line of one API generation: ok (``done``), the error the client
    got (``err``), or cancelled (neither: the client went away mid-way)."""
    if err is not None:
        outcome = outcome_of(err)
    else:
        outcome = audit_events.OK if done is not None else audit_events.CANCELLED
    audit_events.inference(
        audit, model=model, served_by=(routed.served_by or None) if routed else None,
        forwarded_by=None, client=client, subject=None,
        tokens_in=None if done is None else done.prompt_tokens,
        tokens_out=None if done is None else done.completion_tokens,
        duration_ms=(trio.current_time() - started) * 1000, outcome=outcome)


@dataclass
class Managed:
    """The model a management action turned out to be about (known once parsed)."""

    model: str | None = None


@contextmanager
def managing(audit: AuditSink, scope: Scope, action: audit_events.ManagementAction,
             model: str | None = None) -> Iterator[Managed]:
    """Write a ``model_management`` line for the action run in the block (set
    ``.model`` once the body is parsed); the block's exception passes through."""
    act = Managed(model)
    outcome = audit_events.ERROR
    try:
        yield act
        outcome = audit_events.OK
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        audit_events.model_management(audit, action=action, model=act.model,
                                      client=client_of(scope), outcome=outcome)
