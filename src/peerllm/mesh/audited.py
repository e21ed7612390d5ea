"""One audit line per request a peer asked us to serve: a wrapper around the serving
generator (``serving.serve_generator``), composed in node.py.

The wrapper passes the chunks on through a tap that counts tokens and notes the Done
(inline, in the server's reading task),
so neither the infer protocol (p2p/infer.py) nor the serving code needs to know the
audit log exists. It sees no text: only counts, the model and who asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..audit import AuditSink
from ..audit import events as audit_events
from ..errors import InferenceRejected, PeerConnectionLost
from ..events import Done, TokenChunk
from ..p2p.infer import Generator, TokenSource
from ..wire import infer as wi


@dataclass
class _Tally:
    tokens_out: int = 0
    done: Done | None = None


def outcome_of(exc: BaseException) -> str:
    """The audit outcome of a request that ended with ``exc`` (nurseries wrap it in
    groups): the refusal's code, ``connection_lost``, or ``cancelled`` (the peer reset
    the stream or its deadline passed)."""
    leaves: list[BaseException] = []
    todo = [exc]
    while todo:
        cur = todo.pop(0)
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
        else:
            leaves.append(cur)
    rejected = next((x for x in leaves if isinstance(x, InferenceRejected)), None)
    if rejected is not None:
        return rejected.code
    if any(isinstance(x, PeerConnectionLost) for x in leaves):
        return "connection_lost"
    if any(isinstance(x, trio.Cancelled) for x in leaves):
        return audit_events.CANCELLED
    return audit_events.ERROR


class _Tapped:
    """The served source, counting tokens and noting the Done as they pass (inline, in
    the reader's task: no task or channel of its own)."""

    def __init__(self, items: TokenSource, tally: _Tally) -> None:
        self._items = items
        self._tally = tally

    async def receive(self) -> TokenChunk | Done:
        return self._count(await self._items.receive())

    def receive_nowait(self) -> TokenChunk | Done:
        return self._count(self._items.receive_nowait())

    def _count(self, item: TokenChunk | Done) -> TokenChunk | Done:
        if isinstance(item, Done):
            self._tally.done = item
        else:
            self._tally.tokens_out += item.n_tokens
        return item


class SubjectNotes:
    """Whom each request in flight acts for, noted by the serving generator once it has
    checked the request's delegation, read back by the audit wrapper around it.

    Keyed by the request object itself (the same object passes through both), so a
    peer's choice of request ids cannot mix two requests up.
    """

    def __init__(self) -> None:
        self._by_request: dict[int, str] = {}

    def note(self, req: wi.InferRequest, subject: str) -> None:
        self._by_request[id(req)] = subject

    def take(self, req: wi.InferRequest) -> str | None:
        return self._by_request.pop(id(req), None)


def audit_served(generate: Generator, audit: AuditSink, *, served_by: str,
                 subjects: SubjectNotes | None = None) -> Generator:
    """``generate``, writing an ``inference`` line (forwarded_by = the asking peer) for
    every request it is given, whether it is served, refused or abandoned; the subject
    is what ``generate`` noted in ``subjects``."""

    @asynccontextmanager
    async def served(req: wi.InferRequest, peer: str) -> AsyncIterator[TokenSource]:
        started = trio.current_time()
        tally = _Tally()
        outcome = audit_events.CANCELLED
        try:
            async with generate(req, peer) as items:
                yield _Tapped(items, tally)
        except BaseException as exc:
            outcome = outcome_of(exc)
            raise
        else:
            outcome = audit_events.OK if tally.done is not None else audit_events.CANCELLED
        finally:
            done = tally.done
            audit_events.inference(
                audit, model=req.model, served_by=served_by, forwarded_by=peer, client=None,
                subject=subjects.take(req) if subjects is not None else None,
                tokens_in=None if done is None else done.prompt_tokens,
                tokens_out=tally.tokens_out if done is None else done.completion_tokens,
                duration_ms=(trio.current_time() - started) * 1000, outcome=outcome)

    return served
