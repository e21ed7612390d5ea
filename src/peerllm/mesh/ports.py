"""The small typed ports the mesh depends on; the real adapters are p2p/ and inference/.

Each port names only what its user calls, so tests pass small fakes and the mesh never
reaches into a god object.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..auth import Principal
from ..events import Done
from ..inference.backend import Embedded
from ..inference.engine import GenerationStream
from ..inference.priority import Origin
from ..inference.registry import ModelStatus
from ..inference.request import GenerationRequest
from ..p2p.embed import EmbedAnswer
from ..p2p.infer import RemoteGeneration
from ..wire import embed as we
from ..wire import infer as wi
from ..wire import nodeinfo as wni


class Links(Protocol):
    """Which peers we hold a live connection to."""

    def is_connected(self, peer_id: str) -> bool: ...

    async def disconnect(self, peer_id: str) -> None: ...


class InferTransport(Protocol):
    """Sends one infer request to a peer and streams its answer (p2p.infer.InferClient)."""

    def next_request_id(self) -> int: ...

    def request(self, peer_id: str, req: wi.InferRequest
                ) -> AbstractAsyncContextManager[RemoteGeneration]: ...


class EmbedTransport(Protocol):
    """Sends one embed request to a peer and waits for its answer (p2p.embed.EmbedClient)."""

    def next_request_id(self) -> int: ...

    async def embed(self, peer_id: str, req: we.EmbedRequest) -> EmbedAnswer: ...


class LocalEngine(Protocol):
    """This node's own inference engine (inference.engine.Engine)."""

    def stream(self, req: GenerationRequest, *, origin: Origin
               ) -> AbstractAsyncContextManager[GenerationStream]: ...

    async def embed(self, model: str, inputs: Sequence[str]) -> Embedded: ...


class SelfView(Protocol):
    """What the mesh needs to know about this node (mesh.local.LocalNode)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def engine(self) -> LocalEngine | None: ...

    def model_statuses(self) -> list[ModelStatus]: ...

    def resources(self) -> wni.Resources: ...

    def capacity(self) -> int: ...

    def prefixes(self, model_id: str) -> tuple[bytes, ...]:
        """Conversations a batch slot of ``model_id`` holds (wire.prefixes), newest first."""
        ...


class PeerHooks(Protocol):
    """What the router tells membership after a request (mesh.membership.Membership)."""

    def suspect_peer(self, peer_id: str) -> None: ...

    def after_remote_request(self, peer_id: str) -> None: ...

    async def discover(self, model: str) -> None: ...


class RequestAccounting(Protocol):
    """The forwarding side of each placed request (mesh.accounting.Accounting)."""

    def delegation(self, principal: Principal | None, *, audience: str) -> str | None:
        """The ``req.auth`` for one attempt on peer ``audience`` (None: send none)."""
        ...

    def finished(self, principal: Principal | None, done: Done, *, served_by: str,
                 request_id: int | None) -> None:
        """A request ended with ``done`` on ``served_by`` (us, or a peer: check its
        receipt); count it."""
        ...


class ForwardedCall(Protocol):
    """What the serving side reads of a peer's request (an infer or an embed request)."""

    @property
    def request_id(self) -> int: ...

    @property
    def model(self) -> str: ...

    @property
    def auth(self) -> str | None: ...


class ForwardedGate(Protocol):
    """The serving side of peers' requests (mesh.forwarding.ForwardedRequests)."""

    def principal(self, req: ForwardedCall, peer: str) -> Principal:
        """Whom ``peer``'s request acts for, once it may use the model.

        Raises:
            InferenceRejected: unauthorized / forbidden / rate_limited.
        """
        ...

    def admit(self, principal: Principal) -> None:
        """Count the request against the principal's rates.

        Raises:
            InferenceRejected: rate_limited.
        """
        ...

    def finished(self, req: ForwardedCall, peer: str, principal: Principal, done: Done
                 ) -> Done:
        """The request ended: charge its tokens, count it; ``done`` with our receipt."""
        ...


class ConnectedPeers(Protocol):
    """Whom we hold a connection to right now (p2p.host.P2PHost)."""

    def connected_peers(self) -> list[str]: ...


class RevokedToken(Protocol):
    """One revocation record, as the store gives it back (auth.revocations.Revocation)."""

    @property
    def token_id(self) -> str: ...


class RevocationStore(Protocol):
    """The revocations this node honours (auth.revocations.RevocationBook)."""

    version: int  # bumped whenever a record is added

    def records(self) -> list[str]: ...

    def add(self, record: str, *, now: float, persist: bool = True) -> RevokedToken | None:
        """Keep ``record``; None if it was known. Raises AuthError if it is refused."""
        ...

    def rescan(self, *, now: float) -> Sequence[RevokedToken]: ...

    def prune(self, now: float) -> None: ...
