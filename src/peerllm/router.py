"""The request router: places each generation locally or on a peer, with failover.

Candidates come from the local engine, the peer registry's node-info (with the load
peers report in `accepted`), and — when nobody known serves the model — the DHT's
provider records; scheduling.filter says who may get the request and scheduling.mcda
ranks them. A request that fails before its first token moves on to the next candidate
(short, jittered backoff, inside the request's deadline); a stream that breaks or goes
silent after tokens were delivered resumes on another replica from the text so far.
Outcomes feed each peer's circuit breaker; a peer whose connection is gone trips it open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .errors import (
    InferenceCancelled,
    InferenceRejected,
    InferenceTimeout,
    InvalidInferenceRequest,
    ModelBusy,
    ModelLoadError,
    PeerConnectionLost,
    PeerError,
    PeerLLMError,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
)
from .inference._concurrency import reraise_unwrapped
from .inference.engine import GenerationStream
from .inference.request import (
    Done,
    FinishReason,
    GenerationRequest,
    TokenChunk,
)
from .p2p.infer import InferClient
from .p2p.registry import PeerState
from .scheduling.breaker import (
    Breaker,
    BreakerConfig,
    BreakerState,
    describe,
    on_attempt,
    on_failure,
    on_restart,
    on_success,
    release_trial,
    state_at,
    trip,
)
from .scheduling.candidates import Candidate
from .scheduling.filter import NodeView, OfferedModel, Policy, filter_candidates
from .scheduling.mcda import Scored, Weights, apply_affinity, rank_by
from .scheduling.timeouts import first_token_limit, smoothed_gap, stall_limit
from .serving import local_error_to_wire, to_wire_request
from .wire import infer as wi
from .wire import nodeinfo as wni
from .wire.nodeinfo import Resources

if TYPE_CHECKING:
    from .node import Node

logger = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 300.0
MAX_SESSIONS = 4096


def _free_memory(res: Resources) -> int:
    """Free VRAM when the node has GPUs, else free RAM."""
    return sum(g.vram_free_bytes for g in res.gpus) if res.gpus else res.ram_free_bytes


def _total_memory(res: Resources) -> int:
    return sum(g.vram_total_bytes for g in res.gpus) if res.gpus else res.ram_total_bytes


class NoRoute(PeerLLMError):
    """No node can serve the request; ``reasons`` says why, per candidate."""

    def __init__(self, model: str, reasons: dict[str, str], *, known: bool,
                 retry_after_s: float | None = None) -> None:
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items()) or "no node serves it"
        super().__init__(f"model {model!r}: {detail}")
        self.model = model
        self.reasons = reasons
        self.known = known  # False: nobody in the mesh has this model at all
        self.retry_after_s = retry_after_s  # soonest a busy candidate expects a free slot


@dataclass
class Routed:
    """One placed generation: who serves it and its stream of chunks (then Done).

    ``served_by`` changes if the stream broke mid-way and resumed on another replica;
    ``resumed`` counts how often that happened.
    """

    served_by: str = ""
    served_by_name: str = ""
    score: float | None = None  # the serving node's MCDA score when it was chosen
    model: str = ""
    local: bool = False
    resumed: int = 0
    attempts: list[str] = field(default_factory=list)
    _recv: trio.MemoryReceiveChannel[TokenChunk | Done | PeerLLMError] | None = None

    def events(self) -> AsyncIterator[TokenChunk | Done]:
        """The chunks, then one Done. A failure after the first chunk that no replica could
        take over is raised here (NoRoute)."""
        if self._recv is None:
            raise RuntimeError("generation already consumed")
        recv, self._recv = self._recv, None
        return _Events(recv)


class _Events:
    """Iterator over the pump's channel (a class, not an async generator, so a caller
    that stops early leaves nothing to finalise)."""

    def __init__(self, recv: trio.MemoryReceiveChannel[TokenChunk | Done | PeerLLMError]
                 ) -> None:
        self._recv = recv
        self._done = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> TokenChunk | Done:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(item, PeerLLMError):
            self._done = True
            raise item
        if isinstance(item, Done):
            self._done = True
        return item


@dataclass
class _Attempt:
    served_by: str
    served_by_name: str
    local: bool
    events: AsyncGenerator[TokenChunk | Done, None]


_ATTEMPT_ERRORS = (InferenceRejected, PeerError, ProtocolError, ModelBusy, ModelLoadError,
                   InferenceTimeout, InferenceCancelled)


class Router:
    def __init__(self, node: Node, *, rng: random.Random | None = None) -> None:
        self._node = node
        self._client = InferClient(node.host, accept_timeout_s=max(node.config.p2p.call_timeout_s,
                                                                    30.0))
        self._rng = rng or random.Random()
        st = self._settings = node.config.scheduling
        self.weights = Weights(free_memory=st.weight_free_memory, load=st.weight_load,
                               latency=st.weight_latency, throughput=st.weight_throughput)
        self.breaker_cfg = BreakerConfig(failure_threshold=st.breaker_failure_threshold,
                                         cooldown_s=st.breaker_cooldown_s,
                                         half_open_successes=st.breaker_half_open_successes,
                                         trial_timeout_s=st.breaker_trial_timeout_s)
        self.breakers: dict[str, Breaker] = {}
        # Peers whose breaker opened -> the boot nonce of the process that failed; node-info
        # with another nonce is a new process: trial traffic at once. (A reconnect of the
        # same process waits out the cooldown: a flaky link stays out.)
        self._tripped: dict[str, bytes | None] = {}
        p2p = node.config.p2p
        self.policy = Policy(protocol=wi.PROTOCOL_ID, breaker=self.breaker_cfg,
                             max_info_age_s=p2p.heartbeat_interval_s * (p2p.heartbeat_misses + 1))
        self.affinity: dict[str, str] = {}  # session key -> peer that served its last turn
        self._counter = 0
        self.in_flight: dict[str, int] = {}
        # peer -> (its load from its last `accepted`, wall time): fresher than node-info.
        self.load_hints: dict[str, tuple[wni.Load, float]] = {}
        self.routed: dict[str, int] = {}  # destination peer id -> requests routed (metrics)

    # -- candidates ------------------------------------------------------------------

    def views(self) -> list[NodeView]:
        """This node and every known peer, as the scheduler sees them now."""
        node = self._node
        now = trio.current_time()
        wall = time.time()
        out: list[NodeView] = []
        engine = node.engine
        if engine is not None:
            res = node.local_resources()
            statuses = node.model_statuses()
            out.append(NodeView(
                peer_id=node.peer_id, name=node.name, local=True,
                models=tuple(OfferedModel(id=m.id, loaded=m.state == "loaded",
                                          size_bytes=m.memory_bytes or None)
                             for m in statuses),
                free_memory_bytes=_free_memory(res), total_memory_bytes=_total_memory(res),
                active=sum(m.active for m in statuses), queued=sum(m.queued for m in statuses),
                capacity=node.capacity(),
                tokens_per_second=max((m.tokens_per_second for m in statuses
                                       if m.tokens_per_second is not None), default=None)))
        for e in node.registry.entries():
            info = e.info
            if info is None:
                continue
            breaker = self._breaker(e.peer_id, now)
            load: wni.Load = info.load
            hint = self.load_hints.get(e.peer_id)
            if hint is not None:
                if e.info_received_at is None or hint[1] >= e.info_received_at:
                    load = hint[0]
                else:
                    del self.load_hints[e.peer_id]  # node-info is newer
            out.append(NodeView(
                peer_id=e.peer_id, name=e.name,
                healthy=e.state is PeerState.HEALTHY,
                state_reason=f"{e.state.value}: {e.reason or 'not healthy'}",
                info_age_s=None if e.info_received_at is None
                else max(0.0, wall - e.info_received_at),
                protocols=frozenset(info.capabilities.protocols),
                models=tuple(OfferedModel(id=m.id, loaded=m.loaded, size_bytes=m.size_bytes)
                             for m in info.models),
                free_memory_bytes=_free_memory(info.resources),
                total_memory_bytes=_total_memory(info.resources),
                active=load.active, queued=load.queued, capacity=load.capacity,
                rtt_ms=e.rtt_ms, tokens_per_second=info.performance.tokens_per_second,
                in_flight=self.in_flight.get(e.peer_id, 0), breaker=breaker))
        self._forget_departed()
        return out

    def _forget_departed(self) -> None:
        """Drop per-peer state of peers the registry has let go of (bounded memory under
        churn); peers with requests in flight stay until those end."""
        known = {e.peer_id for e in self._node.registry.entries()} | set(self.in_flight)
        for table in (self.breakers, self._tripped, self.load_hints):
            for peer_id in [p for p in table if p not in known]:
                del table[peer_id]

    def candidates(self, model: str) -> tuple[list[Candidate], dict[str, str]]:
        """Everyone who could serve ``model`` now, plus why the others cannot."""
        filtered = filter_candidates(self.views(), model, trio.current_time(), self.policy)
        return filtered.candidates, filtered.reasons()

    def ranked(self, model: str, cands: list[Candidate], session: str | None
               ) -> tuple[list[Candidate], list[Scored]]:
        """The configured strategy's order (plus MCDA scores for explain and headers)."""
        st = self._node.config.scheduling
        self._counter += 1
        order, scored = rank_by(st.strategy, cands, weights=self.weights, rng=self._rng,
                                counter=self._counter, tie_epsilon=st.tie_epsilon)
        if st.affinity and session is not None:
            order = apply_affinity(order, self.affinity.get(session))
        return order, scored

    def explain(self, model: str) -> dict[str, object]:
        """Why each node would (or would not) get a request for ``model`` right now."""
        cands, excluded = self.candidates(model)
        order, scored = self.ranked(model, cands, None)
        by_peer = {s.candidate.peer_id: s for s in scored}
        now = trio.current_time()
        return {
            "model": model,
            "strategy": self._node.config.scheduling.strategy,
            "weights": self.weights.normalised(),
            "candidates": [{
                "rank": i + 1, "peer_id": c.peer_id, "name": c.name, "local": c.local,
                "score": round(by_peer[c.peer_id].total, 4),
                "multiplier": by_peer[c.peer_id].multiplier,
                "criteria": {k: {"value": round(by_peer[c.peer_id].values[k], 4),
                                 "contribution": round(by_peer[c.peer_id].contributions[k], 4)}
                             for k in by_peer[c.peer_id].values},
                "load": {"active": c.active, "queued": c.queued, "capacity": c.capacity,
                         "in_flight": c.in_flight,
                         "from": "local" if c.local else
                         "accepted" if c.peer_id in self.load_hints else "node-info"},
                "health": ("half_open" if c.half_open else "degraded" if c.degraded
                           else "healthy"),
                "breaker": describe(self.breakers.get(c.peer_id, Breaker()), now,
                                    self.breaker_cfg),
            } for i, c in enumerate(order)],
            "excluded": [{"name": k, "reason": v} for k, v in excluded.items()],
        }

    def _breaker(self, peer_id: str, now: float) -> Breaker:
        """The peer's breaker; one tripped when the peer died goes half-open as soon as
        node-info shows a new process (another boot nonce) behind that peer ID."""
        breaker = self.breakers.get(peer_id, Breaker())
        if peer_id in self._tripped:
            entry = self._node.registry.get(peer_id)
            if entry is not None and entry.info is not None \
                    and entry.info.boot_nonce != self._tripped[peer_id]:
                breaker = self.breakers[peer_id] = on_restart(breaker, now, self.breaker_cfg)
                del self._tripped[peer_id]
        return breaker

    def breaker_state(self, peer_id: str) -> str:
        now = trio.current_time()
        return describe(self._breaker(peer_id, now), now, self.breaker_cfg)

    def _release_trial(self, peer_id: str, started: float) -> None:
        b = self.breakers.get(peer_id)
        if b is not None:
            self.breakers[peer_id] = release_trial(b, started)

    def peer_down(self, peer_id: str) -> None:
        """The peer is certainly gone (e.g. a dial to it was refused): open its breaker."""
        self._record(peer_id, ok=False, down=True)

    def _record(self, peer_id: str, ok: bool, *, down: bool = False) -> None:
        """Feed a request's outcome to the peer's breaker; ``down``: the peer is certainly
        gone (dial refused, connection dropped), which opens it at once."""
        if peer_id == self._node.peer_id:
            return
        now = trio.current_time()
        before = self.breakers.get(peer_id, Breaker())
        was_open = state_at(before, now, self.breaker_cfg) is BreakerState.OPEN
        if down:  # (already open: keep its cooldown running)
            b = before if was_open else trip(before, now)
        else:
            b = (on_success if ok else on_failure)(before, now, self.breaker_cfg)
        if not was_open and state_at(b, now, self.breaker_cfg) is BreakerState.OPEN:
            # Remember which process failed: a new one behind this peer ID (another boot
            # nonce) gets trial traffic at once instead of waiting out the cooldown.
            entry = self._node.registry.get(peer_id)
            self._tripped[peer_id] = entry.info.boot_nonce if entry and entry.info else None
            who = f"{entry.name} ({peer_id})" if entry is not None and entry.name else peer_id
            why = ("its connection is gone" if down else
                   f"{b.consecutive_failures} consecutive failed requests")
            # A peer leaving is routine (INFO); requests failing on a live one is not.
            logger.log(logging.INFO if down else logging.WARNING,
                       "circuit breaker for %s opened: %s; next trial in %.0f s", who, why,
                       self.breaker_cfg.cooldown_s)
        self.breakers[peer_id] = b

    def _peer_down(self, peer_id: str, exc: Exception) -> bool:
        """A failure that proves the peer is gone, not just one request gone wrong: the
        stream or dial failed (a killed peer's stream just ends before `done`) and there
        is no connection to it any more."""
        return isinstance(exc, PeerUnavailable | PeerConnectionLost | ProtocolError) \
            and not self._node.host.is_connected(peer_id)

    def _remember_affinity(self, session: str, peer_id: str) -> None:
        self.affinity.pop(session, None)
        self.affinity[session] = peer_id
        while len(self.affinity) > MAX_SESSIONS:  # oldest first (dicts keep insertion order)
            del self.affinity[next(iter(self.affinity))]

    async def _discover(self, model: str) -> None:
        """Nobody known serves ``model``: ask the DHT for providers and meet them."""
        from .p2p.registry import Source

        providers = await self._node.find_providers(model)
        async with trio.open_nursery() as nursery:
            for peer_id, addrs in providers[:8]:
                if peer_id != self._node.peer_id:
                    nursery.start_soon(self._node.connect_peer, peer_id, addrs, Source.DHT)

    def known_models(self) -> dict[str, list[Candidate]]:
        models: set[str] = set(self._node.model_ids())
        for e in self._node.registry.entries():
            if e.info is not None and e.state is PeerState.HEALTHY:
                models.update(m.id for m in e.info.models)
        return {m: self.candidates(m)[0] for m in sorted(models)}

    # -- placing a request -----------------------------------------------------------

    @asynccontextmanager
    async def open(self, req: GenerationRequest, *, session: str | None = None,
                   deadline_s: float = DEFAULT_DEADLINE_S) -> AsyncIterator[Routed]:
        """Place ``req`` and yield its stream once a node accepted it.

        Failures before the first token move on to the next candidate; a stream that
        breaks after tokens were delivered resumes on another replica from the text
        already produced, so the caller sees one uninterrupted answer.

        Raises:
            NoRoute: nobody could take the request (reasons per candidate).
            InferenceRejected: a non-retryable refusal (e.g. bad_request).
        """
        send, recv = trio.open_memory_channel[TokenChunk | Done | PeerLLMError](64)
        routed = Routed(model=req.model, _recv=recv)
        placed = trio.Event()
        failure: list[PeerLLMError] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, req, session, deadline_s, routed, send, placed,
                                   failure)
                await placed.wait()
                if not failure:
                    try:
                        yield routed
                    finally:
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # _pump never raises: the group holds the caller's own exception (or one
            # raised by routed.events()); give it back as itself, not wrapped.
            reraise_unwrapped(group)
        if failure:  # raised here, outside the nursery, so it is not wrapped either
            raise failure[0]

    async def _pump(self, req: GenerationRequest, session: str | None, deadline_s: float,
                    routed: Routed, send: trio.MemorySendChannel[TokenChunk | Done | PeerLLMError],
                    placed: trio.Event, failure: list[PeerLLMError]) -> None:
        """Run the attempts; every error reaches the caller as a value, never as a crash
        of this task (which would surface as an ExceptionGroup from ``open``)."""
        async with send:
            try:
                await self._attempts(req, session, deadline_s, routed, send, placed, failure)
            except PeerLLMError as exc:
                if isinstance(exc, InvalidInferenceRequest):
                    exc = InferenceRejected("bad_request", exc.message, retryable=False)
                if placed.is_set():
                    await send.send(exc)
                else:
                    failure.append(exc)
                    placed.set()

    async def _attempts(self, req: GenerationRequest, session: str | None, deadline_s: float,
                        routed: Routed,
                        send: trio.MemorySendChannel[TokenChunk | Done | PeerLLMError],
                        placed: trio.Event, failure: list[PeerLLMError]) -> None:
        started = trio.current_time()
        reasons: dict[str, str] = {}
        tried: set[str] = set()
        text = ""            # delivered to the caller so far
        tokens = 0
        busy_hints: list[float] = []
        while True:
            cands, excluded = self.candidates(req.model)
            if not cands and not tried:
                await self._discover(req.model)
                cands, excluded = self.candidates(req.model)
            for label, why in excluded.items():
                reasons.setdefault(label, why)
            order, scored = self.ranked(req.model, cands, session)
            ranked = [c for c in order if c.peer_id not in tried]
            if not ranked:
                err = NoRoute(req.model, reasons,
                              known=bool(tried) or bool(cands) or bool(excluded),
                              retry_after_s=min(busy_hints, default=None))
                if placed.is_set():
                    await send.send(err)
                else:
                    failure.append(err)
                    placed.set()
                return
            cand = ranked[0]
            tried.add(cand.peer_id)
            label = cand.name or cand.peer_id
            left = deadline_s - (trio.current_time() - started)
            if left <= 0:
                reasons[label] = "request deadline passed before this candidate was tried"
                continue
            attempt_req = req
            if tokens:
                attempt_req = dataclasses.replace(
                    req, resume_text=req.resume_text + text,
                    params=dataclasses.replace(
                        req.params, max_tokens=max(1, req.params.max_tokens - tokens)))
            got_here = 0
            attempted_at = trio.current_time()
            if not cand.local:
                self.breakers[cand.peer_id] = on_attempt(
                    self.breakers.get(cand.peer_id, Breaker()), attempted_at,
                    self.breaker_cfg)
            routed.score = next((sc.total for sc in scored
                                 if sc.candidate.peer_id == cand.peer_id), None)
            try:
                async with self._attempt(cand, attempt_req, session=session,
                                         deadline_s=left) as attempt:
                    # Accepted: the peer answered, so a half-open trial is not "unanswered"
                    # however long the generation takes; its outcome still counts below.
                    self._release_trial(cand.peer_id, attempted_at)
                    routed.served_by = attempt.served_by
                    routed.served_by_name = attempt.served_by_name
                    routed.local = attempt.local
                    routed.attempts = list(reasons)
                    if placed.is_set():
                        routed.resumed += 1
                        logger.info("resumed %s on %s after %d tokens", req.model, label,
                                    tokens)
                    placed.set()
                    async with contextlib.aclosing(attempt.events) as events:
                        async for ev in events:
                            if isinstance(ev, TokenChunk):
                                got_here += ev.n_tokens
                                text += ev.text
                                tokens += ev.n_tokens
                                await send.send(ev)
                            else:
                                # A resumed attempt counts only its own tokens (its
                                # prompt_tokens exclude resume_text): report it all.
                                self._record(cand.peer_id, ok=True)
                                if session is not None:
                                    self._remember_affinity(session, cand.peer_id)
                                await send.send(
                                    dataclasses.replace(ev, completion_tokens=tokens)
                                    if routed.resumed else ev)
                                return
            except trio.Cancelled:
                self._release_trial(cand.peer_id, attempted_at)  # not the peer's doing
                raise
            except _ATTEMPT_ERRORS as exc:
                rejected = exc if isinstance(exc, InferenceRejected) else (
                    local_error_to_wire(exc) if not isinstance(exc, PeerError | ProtocolError)
                    else None)
                if rejected is not None and not rejected.retryable:
                    self._release_trial(cand.peer_id, attempted_at)  # it did answer
                    if placed.is_set():
                        await send.send(rejected)
                    else:
                        failure.append(rejected)
                        placed.set()
                    return
                self._record(cand.peer_id, ok=False,
                             down=self._peer_down(cand.peer_id, exc))
                hint = getattr(exc, "retry_after_s", None)
                if isinstance(hint, int | float):
                    busy_hints.append(float(hint))
                reasons[label] = str(exc)
                logger.info("request for %s failed on %s after %d tokens: %s; trying next",
                            req.model, label, got_here, exc)
                if isinstance(exc, PeerError | ProtocolError):
                    self._node.suspect_peer(cand.peer_id)
            if not tokens:
                await trio.sleep(min(0.05 * 2 ** (len(tried) - 1), 1.0)
                                 * (0.5 + self._rng.random()))

    @asynccontextmanager
    async def _attempt(self, cand: Candidate, req: GenerationRequest, *, session: str | None,
                       deadline_s: float) -> AsyncIterator[_Attempt]:
        node = self._node
        self.routed[cand.peer_id] = self.routed.get(cand.peer_id, 0) + 1
        if cand.local:
            assert node.engine is not None  # a local candidate exists only with an engine
            with trio.move_on_after(deadline_s):
                async with node.engine.stream(req) as chunks:
                    yield _Attempt(served_by=node.peer_id, served_by_name=node.name,
                                   local=True, events=_local_events(chunks))
            return
        wire_req = to_wire_request(req, request_id=self._client.next_request_id(),
                                   deadline_s=deadline_s, session=session)
        self.in_flight[cand.peer_id] = self.in_flight.get(cand.peer_id, 0) + 1
        try:
            async with self._client.request(cand.peer_id, wire_req) as remote:
                queued_there = 0
                if remote.accepted.load is not None:
                    self.load_hints[cand.peer_id] = (remote.accepted.load, time.time())
                    queued_there = remote.accepted.load.queued
                yield _Attempt(served_by=cand.peer_id,
                               served_by_name=cand.name or cand.peer_id, local=False,
                               events=_remote_events(
                                   remote.events(), req.model, cand.peer_id,
                                   first_token_s=first_token_limit(
                                       self._settings.first_token_timeout_s,
                                       queued_there, loaded=cand.loaded),
                                   stall_s=self._settings.stall_timeout_s))
        finally:
            node.after_remote_request(cand.peer_id)
            self.in_flight[cand.peer_id] -= 1
            if self.in_flight[cand.peer_id] <= 0:
                del self.in_flight[cand.peer_id]


async def _local_events(chunks: GenerationStream) -> AsyncGenerator[TokenChunk | Done, None]:
    async for item in chunks:
        yield item
        if isinstance(item, Done):
            return


async def _remote_events(events: AsyncGenerator[wi.Tokens | wi.Done, None], model: str,
                         peer: str, *, first_token_s: float, stall_s: float
                         ) -> AsyncGenerator[TokenChunk | Done, None]:
    """The peer's frames as chunks; a peer silent for ``first_token_s`` before its first
    frame, or for ``stall_limit`` after it, has failed the request (PeerTimeout): a frozen
    peer keeps its TCP connection open, so only silence tells."""
    async with contextlib.aclosing(events) as evs:
        first = True
        gap: float | None = None  # smoothed time between frames
        last = 0.0
        while True:
            limit = first_token_s if first else stall_limit(gap, stall_s)
            with trio.move_on_after(limit) as waited:
                ev = await anext(evs, None)
            if waited.cancelled_caught:
                raise PeerTimeout(peer, f"no {'first token' if first else 'token'} within "
                                  f"{limit:g} s", phase="first_token" if first else "stall")
            if ev is None:
                return
            now = trio.current_time()
            if not first:
                gap = smoothed_gap(gap, now - last)
            first, last = False, now
            if isinstance(ev, wi.Tokens):
                if ev.text:
                    yield TokenChunk(text=ev.text, n_tokens=ev.n_tokens)
            else:
                reason: FinishReason = ("stop" if ev.finish_reason == "stop" else
                                        "length" if ev.finish_reason == "length" else "cancelled")
                yield Done(finish_reason=reason, prompt_tokens=ev.prompt_tokens,
                           completion_tokens=ev.completion_tokens, ttft_ms=ev.ttft_ms,
                           total_ms=ev.total_ms, model=model)
