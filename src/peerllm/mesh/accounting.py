"""The forwarding side of usage: a delegation for every attempt on a peer, the serving
peer's receipt checked, and every request we placed counted (protocols/auth.md).

Covers every caller of the router (our HTTP API and library users alike): a request is
counted where its Done arrives, once, on the attempt that finished it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..auth import ANONYMOUS, Principal
from ..auth.credentials import NodeCredentials
from ..auth.receipts import read_receipt
from ..auth.usage import UsageLedger, UsageRecord
from ..errors import AuthError
from ..events import Done

logger = logging.getLogger(__name__)


class Accounting:
    """Implements the router's RequestAccounting port over our credentials and ledger."""

    def __init__(self, *, credentials: NodeCredentials, usage: UsageLedger,
                 clock: Callable[[], float] = time.time) -> None:
        self.peer_id = credentials.peer_id
        self._credentials = credentials
        self._usage = usage
        self._clock = clock  # wall clock: delegations and receipts carry Unix times

    def delegation(self, principal: Principal | None, *, audience: str) -> str:
        return self._credentials.delegation(principal, audience=audience, now=self._clock())

    def finished(self, principal: Principal | None, done: Done, *, served_by: str,
                 request_id: int | None) -> None:
        local = served_by == self.peer_id
        verified = not local and self._receipt_holds(done, served_by, request_id)
        self._usage.record(UsageRecord(
            kind="local" if local else "forwarded", at=self._clock(),
            subject=ANONYMOUS if principal is None else principal.subject,
            token_id=None if principal is None else principal.token_id, model=done.model,
            peer=served_by, request_id=request_id, tokens_in=done.prompt_tokens,
            tokens_out=done.completion_tokens, gen_s=done.total_ms / 1000,
            receipt=None if local else done.receipt, verified=verified))

    def _receipt_holds(self, done: Done, peer: str, request_id: int | None) -> bool:
        """Whether ``peer``'s receipt verifies and says what its Done frame said. A bad
        one is the peer's problem: logged, counted as unverified, never the user's."""
        if done.receipt is None:
            logger.info("peer %s sent no receipt for request %s", peer, request_id)
            return False
        try:
            r = read_receipt(done.receipt, server=peer, client=self.peer_id)
        except AuthError as exc:
            logger.warning("receipt from %s for request %s does not verify: %s", peer,
                           request_id, exc)
            return False
        said = (request_id, done.prompt_tokens, done.completion_tokens)
        if (r.request_id, r.tokens_in, r.tokens_out) != said:
            logger.warning("receipt from %s says (request, in, out) = %s, its done frame %s",
                           peer, (r.request_id, r.tokens_in, r.tokens_out), said)
            return False
        return True
