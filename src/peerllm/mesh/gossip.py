"""Revocations reach the whole mesh: pushed at once, relayed, and exchanged on connect.

``RevocationGossip.run`` owns one nursery. A record new to this node — revoked here
(``Authority.revoke``), dropped into ``<data dir>/auth/revoked/`` by ``peerllm token
revoke`` (the folder is rescanned every second), or received from a peer — is pushed to
every connected peer (except the one it came from); every new connection gets our whole
set (anti-entropy: a node that was down catches up when it reconnects). Records of
issuers we do not trust are dropped unverified and never relayed, so gossip carries only
what every relaying node honours. Pushes to one peer are coalesced: at most one at a
time, the next one carrying everything that queued meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Final

import trio

from ..audit import NULL_AUDIT, AuditSink
from ..audit import events as audit_events
from ..auth.jws import unverified_header
from ..errors import AuthError, PeerError, ProtocolError
from ..p2p.revocations import push_records
from ..p2p.streams import StreamOpener
from .ports import ConnectedPeers, RevocationStore

logger = logging.getLogger(__name__)

RESCAN_S: Final = 1.0  # how often the folder is read for records added by the CLI
POLL_S: Final = 0.2  # how often the book is checked for records added by our API
PRUNE_S: Final = 300.0  # how often records of tokens that expired anyway are forgotten
PUSH_TIMEOUT_S: Final = 20.0


FOLDER = "revocations folder"
"""The ``by`` of a revocation read from the data dir (what ``peerllm token revoke`` writes)."""


class RevocationGossip:
    """Keeps ``book`` and our peers' books in step (see the module docstring)."""

    def __init__(self, *, book: RevocationStore, trusted: Collection[str],
                 opener: StreamOpener, links: ConnectedPeers,
                 clock: Callable[[], float] = time.time, audit: AuditSink = NULL_AUDIT
                 ) -> None:
        self._book = book
        self._audit = audit
        self._trusted = frozenset(trusted)
        self._opener = opener
        self._links = links
        self._clock = clock  # wall clock: records carry Unix times
        self._known: set[str] = set()  # records in the book that were already spread
        self._version = -1
        self._outbox: dict[str, dict[str, None]] = {}  # peer -> records to push (ordered)
        self._pushing: set[str] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch the book and push until cancelled; started at once."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # What the book holds at start is on disk already: new connections get it
                # in full; there is nobody to push to yet.
                self._known = set(self._book.records())
                self._version = self._book.version
                nursery.start_soon(self._watch)
                task_status.started()
        finally:
            self._nursery = None

    # -- inputs ------------------------------------------------------------------------

    def peer_connected(self, peer: str) -> None:
        """A connection to ``peer`` opened (membership's hook): send it our whole set."""
        self._enqueue(peer, self._book.records())

    def on_records(self, peer: str, records: tuple[str, ...]) -> None:
        """Records pushed by ``peer`` (RevocationServer's callback): keep and relay the
        new ones from issuers we trust; drop everything else."""
        now = self._clock()
        new: list[str] = []
        for record in records:
            if record in self._known:
                continue  # the common case (anti-entropy): no signature to check
            if not self._trusted_issuer(record):
                logger.debug("dropping a revocation from %s by an issuer we do not trust",
                             peer)
                continue
            try:
                added = self._book.add(record, now=now)
            except AuthError as exc:
                logger.info("dropping a revocation from %s: %s", peer, exc)
                continue
            self._known.add(record)
            if added is not None:
                new.append(record)
                audit_events.token_revoked(self._audit, token_id=added.token_id, by=peer)
        if new:
            logger.info("honouring %d revocation(s) from %s", len(new), peer)
            self._relay(new, exclude=peer)

    # -- the loop ------------------------------------------------------------------------

    async def _watch(self) -> None:
        last_scan = last_prune = trio.current_time()
        while True:
            await trio.sleep(POLL_S)
            now = trio.current_time()
            if now - last_scan >= RESCAN_S:
                last_scan = now
                for rev in self._book.rescan(now=self._clock()):  # `peerllm token revoke`
                    audit_events.token_revoked(self._audit, token_id=rev.token_id,
                                               by=FOLDER)
            if now - last_prune >= PRUNE_S:
                last_prune = now
                self._book.prune(self._clock())
            if self._book.version != self._version:
                self._version = self._book.version
                current = self._book.records()
                new = [r for r in current if r not in self._known]
                self._known = set(current)
                if new:
                    logger.info("spreading %d new revocation(s)", len(new))
                    self._relay(new, exclude=None)

    def _trusted_issuer(self, record: str) -> bool:
        try:
            kid = unverified_header(record, what="revocation").get("kid")
        except AuthError:
            return False
        return isinstance(kid, str) and kid in self._trusted

    def _relay(self, records: list[str], *, exclude: str | None) -> None:
        for peer in self._links.connected_peers():
            if peer != exclude:
                self._enqueue(peer, records)

    def _enqueue(self, peer: str, records: list[str]) -> None:
        if not records or self._nursery is None:
            return
        self._outbox.setdefault(peer, {}).update(dict.fromkeys(records))
        if peer not in self._pushing:
            self._pushing.add(peer)
            self._nursery.start_soon(self._flush, peer)

    async def _flush(self, peer: str) -> None:
        """Push to ``peer`` until its outbox is empty (one stream at a time)."""
        try:
            while batch := self._outbox.pop(peer, None):
                with trio.move_on_after(PUSH_TIMEOUT_S):
                    try:
                        await push_records(self._opener, peer, list(batch))
                    except (PeerError, ProtocolError) as exc:
                        # It left, or speaks no revocations (an older node): the next
                        # connection sends everything again.
                        logger.debug("cannot push revocations to %s: %s", peer, exc)
        finally:
            self._pushing.discard(peer)
