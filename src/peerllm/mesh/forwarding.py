"""The serving side of forwarded requests: whom a peer's request acts for, its rates on
this node, and the receipt we sign for it (protocols/auth.md, "Forwarded requests").
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable

from ..auth import Authority, Principal, Role
from ..auth.credentials import NodeCredentials
from ..auth.receipts import Receipt
from ..auth.usage import UsageLedger, UsageRecord
from ..error_codes import auth_rejection
from ..errors import AuthError, InferenceRejected
from ..events import Done
from ..wire import infer as wi
from .ports import ForwardedCall

logger = logging.getLogger(__name__)


class ForwardedRequests:
    """Implements serving's ForwardedGate port over our Authority, keys and ledger.

    ``serve_peers`` and ``trusted_peers`` are p2p.serve_peers / p2p.trusted_peers.
    """

    def __init__(self, *, authority: Authority, credentials: NodeCredentials,
                 usage: UsageLedger, serve_peers: str, trusted_peers: tuple[str, ...],
                 clock: Callable[[], float] = time.time) -> None:
        self.peer_id = credentials.peer_id
        self._authority = authority
        self._credentials = credentials
        self._usage = usage
        self._serve_peers = serve_peers
        self._trusted_peers = frozenset(trusted_peers)
        self._clock = clock  # wall clock: tokens and delegations carry Unix times

    def principal(self, req: ForwardedCall, peer: str) -> Principal:
        try:
            principal = self._authority.principal_for_peer(
                req.auth, peer=peer, self_peer=self.peer_id, serve_peers=self._serve_peers,
                trusted_peers=self._trusted_peers, now=self._clock())
            self._authority.authorize(principal, Role.USER, model=req.model)
        except AuthError as exc:
            raise self._refused(exc, req, peer) from exc
        return principal

    def admit(self, principal: Principal) -> None:
        try:
            self._authority.admit(principal, now=self._clock())
        except AuthError as exc:
            raise _for_wire(auth_rejection(exc)) from exc

    def finished(self, req: ForwardedCall, peer: str, principal: Principal, done: Done
                 ) -> Done:
        now = self._clock()
        self._authority.charge(principal, done.prompt_tokens + done.completion_tokens,
                               now=now)
        receipt = self._credentials.receipt(Receipt(
            server=self.peer_id, client=peer, id=secrets.token_hex(8),
            request_id=req.request_id, subject=principal.subject,
            token_id=principal.token_id, model=req.model, tokens_in=done.prompt_tokens,
            tokens_out=done.completion_tokens, gen_s=round(done.total_ms / 1000, 6),
            issued_at=int(now)))
        self._usage.record(UsageRecord(
            kind="served", at=now, subject=principal.subject, token_id=principal.token_id,
            model=req.model, peer=peer, request_id=req.request_id,
            tokens_in=done.prompt_tokens, tokens_out=done.completion_tokens,
            gen_s=round(done.total_ms / 1000, 6), receipt=receipt, verified=True))
        return dataclasses.replace(done, receipt=receipt)

    @staticmethod
    def _refused(exc: AuthError, req: ForwardedCall, peer: str) -> Exception:
        logger.info("refused request %d for %s from %s: %s", req.request_id, req.model,
                    peer, exc)
        return _for_wire(auth_rejection(exc))


def _for_wire(rejected: InferenceRejected) -> InferenceRejected:
    """``rejected`` with a Retry-After the error frame can carry: a token far over its
    tokens-per-minute can owe hours, but ``retry_after_ms`` stops at MAX_DEADLINE_MS (an
    error frame we cannot encode would reset the stream and look like a broken peer)."""
    cap = wi.MAX_DEADLINE_MS / 1000
    if rejected.retry_after_s is not None and rejected.retry_after_s > cap:
        rejected.retry_after_s = cap
    return rejected
