"""One request's attempts: try candidates in rank order, fail over, resume mid-stream.

A failure before the first token moves on to the next candidate (short, jittered
backoff, inside the request's deadline); a stream that breaks or goes silent after
tokens were delivered resumes on another replica from the text so far. Who broke it
decides what happens next:

* our own encoder refusing the request (LocalProtocolError) is our fault: the caller
  gets a 400 naming the limit; the peer is not blamed;
* a peer that says "busy" / "too many streams" is healthy: the request moves on, the
  peer is left alone until its Retry-After, and its breaker is untouched;
* a peer that refuses the caller (unauthorized / forbidden / rate_limited) is healthy
  too: the request moves on, and if nobody takes it the caller gets that refusal;
* a stale connection (a restarted peer) is dropped and the same peer redialled once;
* anything else the peer did counts against its breaker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from ..auth import Principal
from ..config import SchedulingSettings
from ..error_codes import BUSY_CODES, REFUSAL_CODES, rejection
from ..errors import (
    InferenceError,
    InferenceRejected,
    InvalidField,
    LocalProtocolError,
    NoRoute,
    PeerConnectionLost,
    PeerError,
    PeerLLMError,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
)
from ..events import Done, TokenChunk
from ..inference.prefixes import next_turn_prefix
from ..inference.request import GenerationRequest
from ..scheduling.candidates import Candidate
from ..scheduling.filter import Filtered
from ..scheduling.mcda import Scored, prefer_loaded
from ..scheduling.timeouts import first_token_limit
from .breakers import BreakerBook
from .ports import InferTransport, Links, PeerHooks, RequestAccounting, SelfView
from .routed import Event, Item, Routed
from .serving import to_wire_request
from .timed_events import local_events, silence_limited
from .views import PeerLoads

logger = logging.getLogger(__name__)

ATTEMPT_ERRORS: Final = (InferenceRejected, PeerError, ProtocolError, InferenceError)
"""What one attempt on one candidate may end with (anything else is a bug of ours)."""
DEFAULT_BUSY_BACKOFF_S: Final = 1.0
MAX_BUSY_WAIT_S: Final = 30.0  # how long one request may wait in all for busy peers
MIN_BUSY_WAIT_S: Final = 0.05
DISCOVER_WAIT_S: Final = 30.0  # finding a model nobody known serves, in the DHT
REDISCOVER_WAIT_S: Final = 5.0  # how long a request whose candidates all failed waits for
# membership to bring a provider back (a restarted replica's redial; not a slow DHT walk)
# Which refusal a caller hears when several replicas refused: the one closest to a yes.
REFUSAL_RANK: Final = {"unauthorized": 0, "forbidden": 1, "rate_limited": 2}


@dataclass
class _Attempt:
    served_by: str
    served_by_name: str
    local: bool
    events: AsyncGenerator[Event, None]
    request_id: int | None = None  # the infer request id sent to a peer


class Placer(Protocol):
    """What a placement uses of its router (mesh.router.Router)."""

    local: SelfView
    breakers: BreakerBook
    loads: PeerLoads
    transport: InferTransport
    links: Links
    hooks: PeerHooks
    settings: SchedulingSettings
    rng: random.Random
    accounting: RequestAccounting | None

    def filtered(self, model: str) -> Filtered: ...

    def ranked(self, cands: list[Candidate], session: str | None,
               prefix: bytes | None = None) -> tuple[list[Candidate], list[Scored]]: ...

    def remember_affinity(self, session: str, peer_id: str) -> None: ...


class Placement:
    """The attempts of one request; reports every outcome on ``send`` or ``failure``."""

    def __init__(self, router: Placer, req: GenerationRequest, *, session: str | None,
                 deadline_s: float, routed: Routed, send: trio.MemorySendChannel[Item],
                 principal: Principal | None = None) -> None:
        self.r = router
        self.req = req
        self.session = session
        self.principal = principal  # whom the request acts for (None: the node itself)
        self.deadline_s = deadline_s
        self.routed = routed
        self.send = send
        self.placed = trio.Event()
        self.failure: PeerLLMError | None = None
        self._reasons: dict[str, str] = {}
        self._tried: set[str] = set()
        self._redialled: set[str] = set()
        self._discovered = False  # asked membership to find the model's providers again
        self._busy_hints: list[float] = []
        self._busy_tried: set[str] = set()  # said "busy" to this request
        self._busy_waited = 0.0
        self._refusal: InferenceRejected | None = None  # the best "not for you" heard
        self._started = 0.0
        self._text = ""  # delivered to the caller so far
        self._tokens = 0

    async def fail(self, exc: PeerLLMError) -> None:
        """End the request with ``exc``: raised from ``open`` or from ``events()``."""
        if self.placed.is_set():
            await self.send.send(exc)
        else:
            self.failure = exc
            self.placed.set()

    def _left(self) -> float:
        return self.deadline_s - (trio.current_time() - self._started)

    async def run(self) -> None:
        self._started = trio.current_time()
        model = self.req.model
        # The conversation before the new user turn: a node whose batch holds it goes first.
        prefix = next_turn_prefix(self.req) if self.r.settings.affinity else None
        while True:
            filtered = self.r.filtered(model)
            cands, excluded = filtered.candidates, filtered.reasons()
            for label, why in excluded.items():
                self._reasons.setdefault(label, why)
            back = self._busy_tried & {c.peer_id for c in cands}
            if back:  # peers that said "busy" to us and whose Retry-After has passed
                self._tried -= back
                self._busy_tried -= back
            order, scored = self.r.ranked(cands, self.session, prefix)
            ranked = [c for c in order if c.peer_id not in self._tried]
            if self._tokens:  # resuming: the user is waiting mid-answer
                ranked = prefer_loaded(ranked)
            if not ranked:
                # Busy peers (ours or other requests' news) are healthy: wait for them.
                waits = {p: w for p, w in filtered.busy().items() if p != self.r.local.peer_id}
                if await self._wait_for_busy(waits):
                    continue
                if self._refusal is not None:
                    # Replicas answered and refused this caller: that is the answer (a
                    # 401/403/429 at the API), not "no route".
                    await self.fail(self._refusal)
                    return
                if not waits and not self._discovered:
                    await self._rediscover(model)
                    continue
                await self.fail(NoRoute(
                    model, self._reasons,
                    known=bool(self._tried) or bool(cands) or bool(excluded),
                    retry_after_s=min([*waits.values(), *self._busy_hints], default=None),
                    versions=filtered.versions))
                return
            cand = ranked[0]
            self._tried.add(cand.peer_id)
            left = self._left()
            if left <= 0:
                self._reasons[cand.name or cand.peer_id] = \
                    "request deadline passed before this candidate was tried"
                continue
            self.routed.score = next((sc.total for sc in scored
                                      if sc.candidate.peer_id == cand.peer_id), None)
            outcome = await self._try(cand, left)
            if outcome == "done":
                return
            if outcome == "retry_same":
                self._tried.discard(cand.peer_id)
            elif outcome == "next" and not self._tokens:
                await trio.sleep(min(0.05 * 2 ** (len(self._tried) - 1), 1.0)
                                 * (0.5 + self.r.rng.random()))

    async def _rediscover(self, model: str) -> None:
        """Nobody left to try: meet the model's providers once more before giving up (a
        replica that restarted moments ago is often back while the registry still lists
        it unreachable until the next heartbeat)."""
        self._discovered = True
        if self._tried:
            logger.info("no candidate left for %s; asking membership to find its "
                        "providers again", model)
        limit = REDISCOVER_WAIT_S if self._tried else DISCOVER_WAIT_S
        with trio.move_on_after(max(0.0, min(self._left(), limit))):
            await self.r.hooks.discover(model)

    async def _wait_for_busy(self, waits: dict[str, float]) -> bool:
        """Every candidate left said it is full: wait for the soonest Retry-After, while
        the request's deadline and the busy-wait budget allow. True if we waited."""
        if not waits:
            return False
        wait = max(MIN_BUSY_WAIT_S, min(waits.values()))
        if wait >= self._left() or self._busy_waited + wait > MAX_BUSY_WAIT_S:
            return False
        await trio.sleep(wait)
        self._busy_waited += wait
        self._tried -= set(waits)
        self._busy_tried -= set(waits)
        return True

    def _attempt_request(self) -> GenerationRequest:
        if not self._tokens:
            return self.req
        p = self.req.params
        if p.json_schema is not None:
            # A grammar starts at the beginning of the answer; no replica can continue one
            # (the engines refuse structured output with resume_text).
            raise InvalidField("json_schema", "structured output cannot be resumed "
                                              "mid-answer on another replica")
        return dataclasses.replace(
            self.req, resume_text=self.req.resume_text + self._text,
            params=dataclasses.replace(p, max_tokens=max(1, p.max_tokens - self._tokens)))

    async def _try(self, cand: Candidate, left_s: float) -> str:
        """One attempt on ``cand``: "done", "next" (try another), "busy" (it is full; try
        another, no backoff), "refused" (not for this caller; try another, no backoff)
        or "retry_same" (redialled: try it again)."""
        r, label = self.r, cand.name or cand.peer_id
        try:
            req = self._attempt_request()
        except InvalidField as exc:
            # The prompt plus the text already delivered is over a request limit: no
            # replica can continue it, and no peer is to blame.
            await self.fail(InferenceRejected(
                "too_large" if exc.too_large else "bad_request",
                f"cannot resume the answer elsewhere: {exc}", retryable=False))
            return "done"
        got_here = 0
        accepted = False
        attempted_at = trio.current_time()
        was_connected = cand.local or r.links.is_connected(cand.peer_id)
        if not cand.local:
            r.breakers.attempt(cand.peer_id, attempted_at)
        try:
            async with self._attempt(cand, req, left_s) as attempt:
                # Accepted: the peer answered, so a half-open trial is not "unanswered"
                # however long the generation takes; its outcome still counts below.
                accepted = True
                r.breakers.release_trial(cand.peer_id, attempted_at)
                self._accepted(attempt, label)
                async with contextlib.aclosing(attempt.events) as events:
                    async for ev in events:
                        if isinstance(ev, TokenChunk):
                            got_here += ev.n_tokens
                            self._text += ev.text
                            self._tokens += ev.n_tokens
                            await self.send.send(ev)
                        else:
                            await self._finished(cand, ev, attempt.request_id)
                            return "done"
        except LocalProtocolError as exc:
            # Our encoder refused our own request: no peer can take it, none is to blame.
            r.breakers.release_trial(cand.peer_id, attempted_at)
            await self.fail(InferenceRejected("bad_request", str(exc), retryable=False))
            return "done"
        except ATTEMPT_ERRORS as exc:
            return await self._failed(cand, exc, attempted_at=attempted_at,
                                      accepted=accepted, got_here=got_here,
                                      was_connected=was_connected)
        except BaseException:
            # Cancelled, or a bug of ours: not the peer's doing, so its trial slot is free.
            r.breakers.release_trial(cand.peer_id, attempted_at)
            raise
        # The stream ended without Done (a local generation hit the deadline).
        return "next"

    def _accepted(self, attempt: _Attempt, label: str) -> None:
        routed = self.routed
        routed.served_by = attempt.served_by
        routed.served_by_name = attempt.served_by_name
        routed.local = attempt.local
        routed.attempts = list(self._reasons)
        if self.placed.is_set():
            routed.resumed += 1
            logger.info("resumed %s on %s after %d tokens", self.req.model, label,
                        self._tokens)
        self.placed.set()

    async def _finished(self, cand: Candidate, done: Done, request_id: int | None) -> None:
        self.r.breakers.record(cand.peer_id, ok=True)
        if self.session is not None:
            self.r.remember_affinity(self.session, cand.peer_id)
        if self.r.accounting is not None:
            # This attempt's own Done: its receipt counts this attempt's tokens only.
            served_by = self.r.local.peer_id if cand.local else cand.peer_id
            self.r.accounting.finished(self.principal, done, served_by=served_by,
                                       request_id=request_id)
        # A resumed attempt counts only its own tokens (its prompt_tokens exclude
        # resume_text): report it all.
        await self.send.send(dataclasses.replace(done, completion_tokens=self._tokens)
                             if self.routed.resumed else done)

    async def _failed(self, cand: Candidate, exc: Exception, *, attempted_at: float,
                      accepted: bool, got_here: int, was_connected: bool) -> str:
        r, label, peer = self.r, cand.name or cand.peer_id, cand.peer_id
        rejected = exc if isinstance(exc, InferenceRejected) else (
            rejection(exc) if isinstance(exc, InferenceError) else None)
        if rejected is not None and rejected.code in REFUSAL_CODES:
            # A healthy peer that will not serve this caller; another replica may (it
            # may trust other issuers). Never its breaker's business.
            r.breakers.release_trial(peer, attempted_at)
            self._reasons[label] = str(exc)
            if self._refusal is None or REFUSAL_RANK.get(rejected.code, 0) \
                    > REFUSAL_RANK.get(self._refusal.code, 0):
                self._refusal = rejected
            logger.info("%s refused %s for this caller (%s); trying the next candidate",
                        label, self.req.model, rejected.message)
            return "refused"
        if rejected is not None and not rejected.retryable:
            r.breakers.release_trial(peer, attempted_at)  # it did answer
            await self.fail(rejected)
            return "done"
        self._reasons[label] = str(exc)
        if rejected is not None and rejected.code == "timeout" and self._left() <= 1.0:
            # It ran out of the budget *we* gave it: our deadline, not its failure.
            r.breakers.release_trial(peer, attempted_at)
            await self.fail(rejected)
            return "done"
        hint = getattr(exc, "retry_after_s", None)
        if rejected is not None and rejected.code in BUSY_CODES:
            # Busy is not broken: leave its breaker alone and it alone until Retry-After.
            r.breakers.release_trial(peer, attempted_at)
            wait = float(hint) if isinstance(hint, int | float) else DEFAULT_BUSY_BACKOFF_S
            self._busy_hints.append(wait)
            r.loads.busy(peer, wait, now=trio.current_time())
            if not cand.local:  # our own full queue is the operator's limit: no waiting
                self._busy_tried.add(peer)
            logger.debug("%s is busy (%s); trying the next candidate", label, rejected.code)
            return "busy"
        if isinstance(hint, int | float):
            self._busy_hints.append(float(hint))
        if not accepted and not cand.local and peer not in self._redialled \
                and stale_connection(exc, was_connected=was_connected):
            # Often a stale connection to a peer that restarted: drop it and dial again
            # once before blaming the peer.
            self._redialled.add(peer)
            r.breakers.release_trial(peer, attempted_at)
            await r.links.disconnect(peer)
            logger.info("connection to %s failed before it accepted (%s); redialling", label,
                        exc)
            return "retry_same"
        r.breakers.record(peer, ok=False, down=self._peer_down(peer, exc))
        logger.info("request for %s failed on %s after %d tokens: %s; trying next",
                    self.req.model, label, got_here, exc)
        if isinstance(exc, PeerError | ProtocolError):
            r.hooks.suspect_peer(peer)
        return "next"

    def _peer_down(self, peer_id: str, exc: Exception) -> bool:
        """A failure that proves the peer is gone, not just one request gone wrong: the
        stream or dial failed (a killed peer's stream just ends before `done`) and there
        is no connection to it any more."""
        return isinstance(exc, PeerUnavailable | PeerConnectionLost | ProtocolError) \
            and not self.r.links.is_connected(peer_id)

    @asynccontextmanager
    async def _attempt(self, cand: Candidate, req: GenerationRequest, deadline_s: float
                       ) -> AsyncIterator[_Attempt]:
        r = self.r
        engine = r.local.engine
        if cand.local:
            if engine is None:  # a local candidate exists only with an engine
                raise RuntimeError("local candidate without an engine")
            with trio.move_on_after(deadline_s):
                async with engine.stream(req, origin="local") as chunks:
                    yield _Attempt(served_by=r.local.peer_id, served_by_name=r.local.name,
                                   local=True, events=local_events(chunks))
            return
        # A delegation per attempt, for this candidate only (protocols/auth.md).
        auth = None if r.accounting is None else r.accounting.delegation(
            self.principal, audience=cand.peer_id)
        wire_req = to_wire_request(req, request_id=r.transport.next_request_id(),
                                   deadline_s=deadline_s, session=self.session, auth=auth)
        r.loads.started(cand.peer_id)
        try:
            async with r.transport.request(cand.peer_id, wire_req) as remote:
                queued_there = 0
                r.loads.accepted(cand.peer_id, remote.accepted.load, wall=time.time())
                if remote.accepted.load is not None:
                    queued_there = remote.accepted.load.queued
                yield _Attempt(
                    served_by=cand.peer_id, served_by_name=cand.name or cand.peer_id,
                    local=False, request_id=wire_req.request_id,
                    events=silence_limited(
                        remote.events(), cand.peer_id,
                        first_token_s=first_token_limit(r.settings.first_token_timeout_s,
                                                        queued_there, loaded=cand.loaded),
                        stall_s=r.settings.stall_timeout_s))
        finally:
            r.hooks.after_remote_request(cand.peer_id)
            r.loads.finished(cand.peer_id)


def stale_connection(exc: Exception, *, was_connected: bool) -> bool:
    """Does ``exc``, before the peer accepted, look like a connection that died under us
    (a restarted peer) rather than a peer that is down? A broken stream always may; a
    failed stream open or negotiation may if we held a connection when we started."""
    if isinstance(exc, PeerConnectionLost):
        return True
    return was_connected and (isinstance(exc, PeerUnavailable)
                              or (isinstance(exc, PeerTimeout) and exc.phase == "open"))
