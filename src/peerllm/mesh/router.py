"""The request router: places each generation locally or on a peer, with failover.

Candidates come from our engine, the peer registry's node-info (with the load peers
report in ``accepted``) and — when nobody known serves the model — the DHT, through
membership; scheduling.filter says who may get the request and scheduling.mcda ranks
them. The attempts themselves (failover, resume, breaker outcomes) are mesh.failover.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import trio

from ..auth import Principal
from ..config import SchedulingSettings
from ..errors import InferenceRejected, InvalidInferenceRequest, PeerLLMError
from ..inference._concurrency import reraise_unwrapped
from ..inference.request import GenerationRequest
from ..p2p.registry import PeerRegistry, PeerState
from ..scheduling.breaker import BreakerConfig
from ..scheduling.candidates import Candidate
from ..scheduling.filter import Filtered, NodeView, Policy, filter_candidates
from ..scheduling.mcda import Scored, Weights, apply_affinity, rank_by
from .breakers import BreakerBook
from .embedding import EmbedPlacement, PlacedEmbeddings
from .failover import Placement
from .ports import EmbedTransport, InferTransport, Links, PeerHooks, RequestAccounting, SelfView
from .routed import Item, Routed
from .views import PeerLoads, build_views

DEFAULT_DEADLINE_S: Final = 300.0
MAX_SESSIONS: Final = 4096


def breaker_config(st: SchedulingSettings) -> BreakerConfig:
    return BreakerConfig(failure_threshold=st.breaker_failure_threshold,
                         cooldown_s=st.breaker_cooldown_s,
                         half_open_successes=st.breaker_half_open_successes,
                         trial_timeout_s=st.breaker_trial_timeout_s)


class Router:
    """Places requests; one per node. Every dependency is a port (mesh.ports)."""

    def __init__(self, *, local: SelfView, registry: PeerRegistry, breakers: BreakerBook,
                 transport: InferTransport, links: Links, hooks: PeerHooks,
                 settings: SchedulingSettings, policy: Policy,
                 rng: random.Random | None = None,
                 accounting: RequestAccounting | None = None,
                 embed_transport: EmbedTransport | None = None) -> None:
        self.local = local
        self.registry = registry
        self.breakers = breakers
        self.transport = transport
        self.links = links
        self.hooks = hooks
        self.settings = settings
        self.policy = policy
        self.rng = rng or random.Random()
        self.accounting = accounting  # None: no delegations, receipts or usage
        self.embed_transport = embed_transport  # None: embeddings run only on our engine
        st = settings
        self.weights = Weights(free_memory=st.weight_free_memory, load=st.weight_load,
                               latency=st.weight_latency, throughput=st.weight_throughput)
        self.loads = PeerLoads()
        self._affinity: dict[str, str] = {}  # session key -> peer that served its last turn
        self._counter = 0

    # -- candidates ------------------------------------------------------------------

    def views(self) -> list[NodeView]:
        """This node and every known peer, as the scheduler sees them now."""
        return build_views(self.local, self.registry, self.breakers, self.loads,
                           now=trio.current_time(), wall=time.time())

    def filtered(self, model: str) -> Filtered:
        """Who could serve ``model`` now, and why each of the others cannot."""
        return filter_candidates(self.views(), model, trio.current_time(), self.policy)

    def candidates(self, model: str) -> tuple[list[Candidate], dict[str, str]]:
        """Everyone who could serve ``model`` now, plus why the others cannot."""
        filtered = self.filtered(model)
        return filtered.candidates, filtered.reasons()

    def ranked(self, cands: list[Candidate], session: str | None,
               prefix: bytes | None = None) -> tuple[list[Candidate], list[Scored]]:
        """The configured strategy's order (plus MCDA scores for explain and headers).

        With ``scheduling.affinity`` on, the node that served ``session``'s last turn
        goes first; failing that, the one advertising ``prefix`` (the conversation so
        far, inference.prefixes.next_turn_prefix), whose batch slot holds it.
        """
        st = self.settings
        self._counter += 1
        order, scored = rank_by(st.strategy, cands, weights=self.weights, rng=self.rng,
                                counter=self._counter, tie_epsilon=st.tie_epsilon)
        if st.affinity:
            remembered = None if session is None else self._affinity.get(session)
            order = apply_affinity(order, remembered, prefix)
        return order, scored

    def remember_affinity(self, session: str, peer_id: str) -> None:
        self._affinity.pop(session, None)
        self._affinity[session] = peer_id
        while len(self._affinity) > MAX_SESSIONS:  # oldest first (dicts keep insertion order)
            del self._affinity[next(iter(self._affinity))]

    def served_models(self) -> set[str]:
        """The ids of every model this node or a healthy peer's node-info serves."""
        models: set[str] = {m.id for m in self.local.model_statuses()}
        for e in self.registry.entries():
            if e.info is not None and e.state is PeerState.HEALTHY:
                models.update(m.id for m in e.info.models)
        return models

    def serves(self, model: str) -> bool:
        """Whether the mesh serves ``model`` (cheap: no scoring, no lookups)."""
        return model in self.served_models()

    def known_models(self) -> dict[str, list[Candidate]]:
        """Every model served anywhere in the mesh, with the nodes that can take it now."""
        return {m: self.candidates(m)[0] for m in sorted(self.served_models())}

    # -- placing a request -----------------------------------------------------------

    @asynccontextmanager
    async def open(self, req: GenerationRequest, *, session: str | None = None,
                   deadline_s: float = DEFAULT_DEADLINE_S,
                   principal: Principal | None = None) -> AsyncIterator[Routed]:
        """Place ``req`` and yield its stream once a node accepted it.

        Failures before the first token move on to the next candidate; a stream that
        breaks after tokens were delivered resumes on another replica from the text
        already produced, so the caller sees one uninterrupted answer. ``principal`` is
        whom the request acts for (the API's verified caller): peers get a delegation
        for it, and usage is counted under its subject; None acts for the node itself
        (anonymous to peers).

        Raises:
            NoRoute: nobody could take the request (reasons per candidate).
            InferenceRejected: a non-retryable refusal (e.g. bad_request), or the
                refusal (unauthorized / forbidden / rate_limited) of the replicas that
                refused this caller when no replica took it.
        """
        send, recv = trio.open_memory_channel[Item](64)
        routed = Routed(model=req.model, _recv=recv)
        placement = Placement(self, req, session=session, deadline_s=deadline_s,
                              routed=routed, send=send, principal=principal)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, placement, send)
                await placement.placed.wait()
                if placement.failure is None:
                    try:
                        yield routed
                    finally:
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # _pump never raises: the group holds the caller's own exception (or one
            # raised by routed.events()); give it back as itself, not wrapped.
            reraise_unwrapped(group)
        if placement.failure is not None:  # raised outside the nursery: not wrapped
            raise placement.failure

    async def embed(self, model: str, inputs: Sequence[str], *,
                    deadline_s: float = DEFAULT_DEADLINE_S,
                    principal: Principal | None = None) -> PlacedEmbeddings:
        """Embed ``inputs`` with ``model`` on the best node (this one or a peer), failing
        over to the next replica before an answer; ``principal`` as in ``open``.

        Raises:
            NoRoute: nobody could take the request (reasons per candidate).
            InferenceRejected: a non-retryable refusal, or the refusal of the replicas
                that refused this caller when no replica took it.
        """
        return await EmbedPlacement(self, self.embed_transport, model, inputs,
                                    deadline_s=deadline_s, principal=principal).run()

    async def _pump(self, placement: Placement, send: trio.MemorySendChannel[Item]) -> None:
        """Run the attempts; every error reaches the caller as a value, never as a crash
        of this task (which would surface as an ExceptionGroup from ``open``)."""
        async with send:
            try:
                await placement.run()
            except PeerLLMError as exc:
                if isinstance(exc, InvalidInferenceRequest):
                    exc = InferenceRejected("bad_request", exc.message, retryable=False)
                await placement.fail(exc)

