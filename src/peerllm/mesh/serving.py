"""Both directions of /peerllm/infer on our side: serving peers' requests on the local
engine, and mapping generation requests, events and engine errors to and from the wire
(the error codes themselves are peerllm.error_codes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ..error_codes import rejection
from ..errors import InferenceError, InferenceRejected
from ..events import Done, TokenChunk
from ..inference.engine import GenerationStream
from ..inference.request import ChatMessage, GenerationRequest, SamplingParams
from ..p2p.infer import Generator, TokenSource
from ..scheduling.pins import PIN_SEPARATOR
from ..wire import infer as wi
from .audited import SubjectNotes
from .ports import ForwardedGate, SelfView


def to_wire_request(req: GenerationRequest, *, request_id: int, deadline_s: float,
                    session: str | None, auth: str | None = None) -> wi.InferRequest:
    p = req.params
    return wi.InferRequest(
        request_id=request_id, model=req.model,
        messages=None if req.messages is None else tuple(
            wi.ChatTurn(role=m.role, content=m.content) for m in req.messages),
        prompt=req.prompt,
        sampling=wi.Sampling(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                             top_k=p.top_k, repeat_penalty=p.repeat_penalty, stop=p.stop,
                             seed=p.seed, presence_penalty=p.presence_penalty,
                             frequency_penalty=p.frequency_penalty, logit_bias=p.logit_bias,
                             json_schema=p.json_schema),
        deadline_ms=max(1, min(int(deadline_s * 1000), wi.MAX_DEADLINE_MS)),
        resume_text=req.resume_text, session=session, auth=auth)


def from_wire_request(req: wi.InferRequest) -> GenerationRequest:
    s = req.sampling
    try:
        params = SamplingParams(max_tokens=s.max_tokens, temperature=s.temperature,
                                top_p=s.top_p, top_k=s.top_k, repeat_penalty=s.repeat_penalty,
                                stop=s.stop, seed=s.seed, presence_penalty=s.presence_penalty,
                                frequency_penalty=s.frequency_penalty, logit_bias=s.logit_bias,
                                json_schema=s.json_schema)
        return GenerationRequest(
            model=req.model, prompt=req.prompt, params=params, resume_text=req.resume_text,
            messages=None if req.messages is None else tuple(
                ChatMessage(role=m.role, content=m.content) for m in req.messages))
    except ValueError as exc:
        raise InferenceRejected("bad_request", str(exc), retryable=False) from exc


def serve_generator(local: SelfView, served: Callable[[], list[str]], *,
                    forwarded: ForwardedGate | None = None,
                    subjects: SubjectNotes | None = None) -> Generator:
    """The InferServer's generator: run a peer's request on the local engine.

    ``served`` lists the model ids this node serves right now; ``forwarded`` decides
    whom each request acts for and may refuse it (None: every peer is served, with no
    receipt); the subject it finds is noted in ``subjects`` (for the audit line).
    """

    @asynccontextmanager
    async def generate(req: wi.InferRequest, peer: str) -> AsyncIterator[TokenSource]:
        # Who asks comes first: a peer we do not serve learns nothing else from us.
        principal = forwarded.principal(req, peer) if forwarded is not None else None
        if principal is not None and subjects is not None:
            subjects.note(req, principal.subject)
        engine = local.engine
        # A pinned id (id@<digest prefix>) is checked against the version by the engine.
        if engine is None or req.model.partition(PIN_SEPARATOR)[0] not in served():
            raise InferenceRejected("model_not_found",
                                    f"{local.name} does not serve {req.model}",
                                    retryable=False)
        gen_req = from_wire_request(req)
        if forwarded is not None and principal is not None:
            forwarded.admit(principal)  # after the checks that cost the caller nothing
        finish = None if forwarded is None or principal is None else (
            lambda done: forwarded.finished(req, peer, principal, done))
        try:
            # "peer": our own users' requests go first on our engine (inference.priority).
            async with engine.stream(gen_req, origin="peer") as chunks:
                yield _Served(chunks, finish)
        except InferenceError as exc:
            raise rejection(exc) from exc

    return generate


class _Served:
    """The engine's stream as the InferServer reads it (a ``TokenSource``): engine
    failures become refusals for the wire, and Done gets its receipt (``finish``), in
    the server's own task."""

    def __init__(self, chunks: GenerationStream, finish: Callable[[Done], Done] | None
                 ) -> None:
        self._chunks = chunks
        self._finish = finish

    async def receive(self) -> TokenChunk | Done:
        try:
            item = await anext(self._chunks)
        except StopAsyncIteration:
            raise trio.EndOfChannel from None
        except InferenceError as exc:
            raise rejection(exc) from exc
        return self._finished(item)

    def receive_nowait(self) -> TokenChunk | Done:
        try:
            item = self._chunks.next_nowait()
        except InferenceError as exc:
            raise rejection(exc) from exc
        if item is None:  # nothing yet (or the end, which receive() reports)
            raise trio.WouldBlock
        return self._finished(item)

    def _finished(self, item: TokenChunk | Done) -> TokenChunk | Done:
        if isinstance(item, Done) and self._finish is not None:
            return self._finish(item)
        return item
