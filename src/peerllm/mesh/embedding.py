"""Embeddings through the mesh: placing a batch on this node or a peer (with the router's
ranking, breakers and failover), and serving peers' embed requests on our engine.

An embed request is one answer, not a stream, so placing it is simpler than a
generation's (mesh.failover): try the candidates in rank order; a failure before the
answer moves on to the next one, with the same rules about whom to blame: a busy peer or
one that refuses this caller is healthy (no breaker failure), a stale connection is
redialled once, and anything else counts against the peer's breaker. There is no resume.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from ..audit import AuditSink
from ..audit import events as audit_events
from ..auth import Principal
from ..error_codes import BUSY_CODES, REFUSAL_CODES, rejection
from ..errors import (
    InferenceError,
    InferenceRejected,
    LocalProtocolError,
    NoRoute,
    PeerConnectionLost,
    PeerError,
    PeerUnavailable,
    ProtocolError,
)
from ..events import Done
from ..inference.backend import Embedded
from ..p2p.embed import EmbedAnswer, Embedder
from ..scheduling.candidates import Candidate
from ..scheduling.filter import Filtered, NodeView, Policy, filter_candidates
from ..scheduling.mcda import Scored
from ..wire import embed as we
from .audited import outcome_of
from .breakers import BreakerBook
from .failover import (
    ATTEMPT_ERRORS,
    DEFAULT_BUSY_BACKOFF_S,
    DISCOVER_WAIT_S,
    MAX_BUSY_WAIT_S,
    MIN_BUSY_WAIT_S,
    REDISCOVER_WAIT_S,
    REFUSAL_RANK,
    stale_connection,
)
from .ports import (
    EmbedTransport,
    ForwardedGate,
    Links,
    LocalEngine,
    PeerHooks,
    RequestAccounting,
    SelfView,
)
from .views import PeerLoads

logger = logging.getLogger(__name__)



@dataclass(frozen=True, kw_only=True)
class PlacedEmbeddings:
    """The vectors of one batch, and who computed them."""

    vectors: list[list[float]]
    prompt_tokens: int
    served_by: str
    served_by_name: str
    local: bool
    attempts: list[str]  # the candidates that failed or refused before, by label


class EmbedPlacer(Protocol):
    """What placing an embed request uses of its router (mesh.router.Router)."""

    local: SelfView
    breakers: BreakerBook
    loads: PeerLoads
    links: Links
    hooks: PeerHooks
    policy: Policy
    accounting: RequestAccounting | None

    def views(self) -> list[NodeView]: ...

    def ranked(self, cands: list[Candidate], session: str | None
               ) -> tuple[list[Candidate], list[Scored]]: ...


class EmbedPlacement:
    """The attempts of one embed request: ``await EmbedPlacement(...).run()``."""

    def __init__(self, router: EmbedPlacer, transport: EmbedTransport | None, model: str,
                 inputs: Sequence[str], *, deadline_s: float,
                 principal: Principal | None) -> None:
        self.r = router
        self.transport = transport
        self.model = model
        self.inputs = tuple(inputs)
        self.deadline_s = deadline_s
        self.principal = principal
        # Remote candidates must speak the embed protocol (older peers do not).
        self.policy = dataclasses.replace(router.policy, protocol=we.PROTOCOL_ID)
        self._reasons: dict[str, str] = {}
        self._tried: set[str] = set()
        self._redialled: set[str] = set()
        self._discovered = False
        self._busy_hints: list[float] = []
        self._busy_waited = 0.0
        self._refusal: InferenceRejected | None = None
        self._started = 0.0

    def _left(self) -> float:
        return self.deadline_s - (trio.current_time() - self._started)

    def _filtered(self) -> Filtered:
        return filter_candidates(self.r.views(), self.model, trio.current_time(), self.policy)

    async def run(self) -> PlacedEmbeddings:
        """Raises: NoRoute, or InferenceRejected (a refusal no replica can fix, or the
        refusal of every replica that refused this caller)."""
        self._started = trio.current_time()
        while True:
            filtered = self._filtered()
            for label, why in filtered.reasons().items():
                self._reasons.setdefault(label, why)
            order, _ = self.r.ranked(filtered.candidates, None)
            ranked = [c for c in order if c.peer_id not in self._tried]
            if not ranked:
                if self._refusal is not None:
                    raise self._refusal
                # Busy peers are healthy: wait for their Retry-After (within budget).
                busy = {p: w for p, w in filtered.busy().items()
                        if p != self.r.local.peer_id}
                if await self._wait_for_busy(busy):
                    continue
                if not busy and not self._discovered:
                    await self._rediscover()
                    continue
                raise NoRoute(self.model, self._reasons,
                              known=bool(self._tried) or bool(filtered.candidates)
                              or bool(filtered.excluded),
                              retry_after_s=min([*busy.values(), *self._busy_hints],
                                                default=None))
            cand = ranked[0]
            self._tried.add(cand.peer_id)
            if not cand.local and self.transport is None:
                self._reasons[cand.name or cand.peer_id] = \
                    "this node sends no embed requests to peers"
                continue
            left = self._left()
            if left <= 0:
                self._reasons[cand.name or cand.peer_id] = \
                    "request deadline passed before this candidate was tried"
                continue
            placed = await self._try(cand, left)
            if placed is not None:
                return placed

    async def _wait_for_busy(self, waits: dict[str, float]) -> bool:
        """Every candidate left said it is full: wait for the soonest Retry-After, while
        the deadline and the busy-wait budget allow. True if we waited."""
        if not waits:
            return False
        wait = max(MIN_BUSY_WAIT_S, min(waits.values()))
        if wait >= self._left() or self._busy_waited + wait > MAX_BUSY_WAIT_S:
            return False
        await trio.sleep(wait)
        self._busy_waited += wait
        self._tried -= set(waits)
        return True

    async def _rediscover(self) -> None:
        self._discovered = True
        limit = REDISCOVER_WAIT_S if self._tried else DISCOVER_WAIT_S
        with trio.move_on_after(max(0.0, min(self._left(), limit))):
            await self.r.hooks.discover(self.model)

    async def _try(self, cand: Candidate, left_s: float) -> PlacedEmbeddings | None:
        """One attempt on ``cand``: its answer, or None to try the next candidate."""
        r, peer = self.r, cand.peer_id
        attempted_at = trio.current_time()
        was_connected = cand.local or r.links.is_connected(peer)
        if not cand.local:
            r.breakers.attempt(peer, attempted_at)
        try:
            if cand.local:
                got, request_id = await self._local(left_s), None
            else:
                got, request_id = await self._remote(cand, left_s)
        except LocalProtocolError as exc:
            r.breakers.release_trial(peer, attempted_at)  # our own request: nobody's fault
            raise InferenceRejected("bad_request", str(exc), retryable=False) from exc
        except ATTEMPT_ERRORS as exc:
            await self._failed(cand, exc, attempted_at=attempted_at,
                               was_connected=was_connected)
            return None
        except BaseException:
            r.breakers.release_trial(peer, attempted_at)
            raise
        r.breakers.release_trial(peer, attempted_at)
        r.breakers.record(peer, ok=True)
        served_by = r.local.peer_id if cand.local else peer
        if r.accounting is not None:
            r.accounting.finished(self.principal, Done(
                finish_reason="stop", prompt_tokens=got.prompt_tokens, completion_tokens=0,
                ttft_ms=None, total_ms=(trio.current_time() - attempted_at) * 1000,
                model=self.model, receipt=got.receipt), served_by=served_by,
                request_id=request_id)
        return PlacedEmbeddings(vectors=got.vectors, prompt_tokens=got.prompt_tokens,
                                served_by=served_by,
                                served_by_name=r.local.name if cand.local
                                else cand.name or peer,
                                local=cand.local, attempts=list(self._reasons))

    async def _local(self, left_s: float) -> EmbedAnswer:
        engine = self.r.local.engine
        if engine is None:  # a local candidate exists only with an engine
            raise RuntimeError("local candidate without an engine")
        with trio.move_on_after(left_s):
            got = await engine.embed(self.model, self.inputs)
            return EmbedAnswer(vectors=got.vectors, prompt_tokens=got.prompt_tokens)
        raise InferenceRejected("timeout", "request deadline passed", retryable=True)

    async def _remote(self, cand: Candidate, left_s: float) -> tuple[EmbedAnswer, int]:
        r, transport = self.r, self.transport
        if transport is None:  # run() sends no remote candidate here
            raise RuntimeError("remote candidate without an embed transport")
        auth = None if r.accounting is None else r.accounting.delegation(
            self.principal, audience=cand.peer_id)
        req = we.EmbedRequest(request_id=transport.next_request_id(), model=self.model,
                              inputs=self.inputs, auth=auth,
                              deadline_ms=max(1, min(int(left_s * 1000), we.MAX_DEADLINE_MS)))
        r.loads.started(cand.peer_id)
        try:
            return await transport.embed(cand.peer_id, req), req.request_id
        finally:
            r.hooks.after_remote_request(cand.peer_id)
            r.loads.finished(cand.peer_id)

    async def _failed(self, cand: Candidate, exc: Exception, *, attempted_at: float,
                      was_connected: bool) -> None:
        r, label, peer = self.r, cand.name or cand.peer_id, cand.peer_id
        rejected = exc if isinstance(exc, InferenceRejected) else (
            rejection(exc) if isinstance(exc, InferenceError) else None)
        self._reasons[label] = str(exc)
        if rejected is not None and rejected.code in REFUSAL_CODES:
            r.breakers.release_trial(peer, attempted_at)  # healthy, not for this caller
            if self._refusal is None or REFUSAL_RANK.get(rejected.code, 0) \
                    > REFUSAL_RANK.get(self._refusal.code, 0):
                self._refusal = rejected
            return
        if rejected is not None and (not rejected.retryable or (
                rejected.code == "timeout" and self._left() <= 1.0)):
            r.breakers.release_trial(peer, attempted_at)  # it answered: no replica can help
            raise rejected
        hint = getattr(exc, "retry_after_s", None)
        if rejected is not None and rejected.code in BUSY_CODES:
            r.breakers.release_trial(peer, attempted_at)  # busy is not broken
            wait = float(hint) if isinstance(hint, int | float) else DEFAULT_BUSY_BACKOFF_S
            self._busy_hints.append(wait)
            r.loads.busy(peer, wait, now=trio.current_time())
            return
        if not cand.local and peer not in self._redialled \
                and stale_connection(exc, was_connected=was_connected):
            self._redialled.add(peer)  # often a restarted peer: dial again once
            r.breakers.release_trial(peer, attempted_at)
            await r.links.disconnect(peer)
            self._tried.discard(peer)
            return
        down = isinstance(exc, PeerUnavailable | PeerConnectionLost | ProtocolError) \
            and not r.links.is_connected(peer)
        r.breakers.record(peer, ok=False, down=down)
        logger.info("embed request for %s failed on %s: %s; trying next", self.model, label,
                    exc)
        if isinstance(exc, PeerError | ProtocolError):
            r.hooks.suspect_peer(peer)


def serve_embedder(local: SelfView, served: Callable[[], list[str]], *,
                   forwarded: ForwardedGate | None = None,
                   audit: AuditSink | None = None) -> Embedder:
    """The EmbedServer's embedder: run a peer's embed request on the local engine.

    The same checks as a forwarded generation (mesh.serving): whom it acts for first,
    then the model, then the principal's rates; a served request is charged its prompt
    tokens and answered with our receipt. ``audit`` gets one ``inference`` line
    (kind ``embedding``, forwarded_by the peer) per request, however it ends.
    """

    def admitted(req: we.EmbedRequest, peer: str) -> tuple[Principal | None, LocalEngine]:
        # Who asks comes first: a peer we do not serve learns nothing else from us.
        principal = forwarded.principal(req, peer) if forwarded is not None else None
        engine = local.engine
        if engine is None or req.model not in served():
            raise InferenceRejected("model_not_found", f"{local.name} does not serve "
                                    f"{req.model}", retryable=False)
        if forwarded is not None and principal is not None:
            forwarded.admit(principal)  # after the checks that cost the caller nothing
        return principal, engine

    async def embed(req: we.EmbedRequest, peer: str) -> EmbedAnswer:
        started, outcome = trio.current_time(), audit_events.ERROR
        principal: Principal | None = None
        tokens_in: int | None = None
        try:
            principal, engine = admitted(req, peer)
            try:
                got: Embedded = await engine.embed(req.model, req.inputs)
            except InferenceError as exc:
                raise rejection(exc) from exc
            tokens_in = got.prompt_tokens
            receipt = None
            if forwarded is not None and principal is not None:
                receipt = forwarded.finished(req, peer, principal, Done(
                    finish_reason="stop", prompt_tokens=got.prompt_tokens,
                    completion_tokens=0, ttft_ms=None,
                    total_ms=(trio.current_time() - started) * 1000, model=req.model)).receipt
            outcome = audit_events.OK
            return EmbedAnswer(vectors=got.vectors, prompt_tokens=got.prompt_tokens,
                               receipt=receipt)
        except BaseException as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            if audit is not None:
                audit_events.inference(
                    audit, kind="embedding", model=req.model,
                    served_by=local.peer_id if outcome == audit_events.OK else None,
                    forwarded_by=peer, client=None,
                    subject=None if principal is None else principal.subject,
                    tokens_in=tokens_in, tokens_out=None,
                    duration_ms=(trio.current_time() - started) * 1000, outcome=outcome)

    return embed
