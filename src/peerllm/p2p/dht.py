"""Kademlia DHT facade: signed node records, name claims and model provider records.

Values are only for slowly-changing, signed, versioned facts (py-libp2p serves them
from a local cache, so reads can be stale); live state comes from node-info. The DHT
speaks ``DHT_PROTOCOL_ID``, not the public IPFS DHT's /ipfs/kad/1.0.0, so a node that
meets an IPFS peer never merges the two networks (protocols/dht-records.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from libp2p.custom_types import TProtocol
from libp2p.kad_dht import common as kad_common
from libp2p.kad_dht import kad_dht as kad_module
from libp2p.kad_dht import peer_routing as kad_peer_routing
from libp2p.kad_dht import provider_store as kad_provider_store
from libp2p.kad_dht import value_store as kad_value_store
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.records.validator import Validator
from libp2p.tools.anyio_service import background_trio_service

from ..audit import NULL_AUDIT, AuditSink
from ..audit import events as audit_events
from ..errors import RecordError
from ..identity import Identity, peer_id_of, verify
from ..security_events import RecordKind
from ..wire.records import (
    NAMESPACE,
    NameClaim,
    NodeRecord,
    SignedRecord,
    name_record_key,
    node_record_key,
    open_record,
    provider_key,
    seal_record,
    select_newest,
)
from .host import P2PHost

logger = logging.getLogger(__name__)

DHT_PROTOCOL_ID = TProtocol("/peerllm/kad/1.0.0")
"""The Kademlia protocol id PeerLLM's DHT speaks (open and private networks alike)."""

DHT_OP_TIMEOUT_S = 30.0
"""Every DHT operation runs under this deadline: frozen peers cost 10 s per query round."""


ONE_HOP_FANOUT = 3
ONE_HOP_TIMEOUT_S = 1.5


def use_our_dht_protocol_id() -> None:
    """Make py-libp2p's KadDHT speak ``DHT_PROTOCOL_ID``.

    py-libp2p 0.8.1 hard-codes /ipfs/kad/1.0.0 and ignores ``protocol_prefix``: each
    of these modules imported ``PROTOCOL_ID`` by name (the routing table reads
    ``common.PROTOCOL_ID`` when it runs), so each binding is replaced. Idempotent; call
    before a KadDHT is built (its constructor registers the stream handler).
    """
    for module in (kad_common, kad_module, kad_peer_routing, kad_provider_store,
                   kad_value_store):
        module.PROTOCOL_ID = DHT_PROTOCOL_ID


class RecordValidator(Validator):
    """libp2p validator for the /peerllm/ namespace: signed, unexpired, matching keys.

    libp2p does not say who sent the value, so the audit line names no peer.
    """

    def __init__(self, audit: AuditSink = NULL_AUDIT) -> None:
        self._audit = audit

    def validate(self, key: str, value: bytes) -> None:
        try:
            open_record(key, value, now=time.time(), verify=verify, peer_id_of=peer_id_of)
        except RecordError as exc:
            logger.debug("rejected DHT record %s: %s", key, exc)
            audit_events.invalid_record(self._audit, kind=RecordKind.DHT, peer=None, key=key,
                                        reason=str(exc))
            raise ValueError(f"invalid peerllm record: {exc}") from exc

    def select(self, key: str, values: list[bytes]) -> int:
        opened: list[SignedRecord] = []
        index: list[int] = []
        now = time.time()
        for i, value in enumerate(values):
            try:
                opened.append(open_record(key, value, now=now, verify=verify,
                                          peer_id_of=peer_id_of))
                index.append(i)
            except RecordError:
                continue
        if not opened:
            return 0
        return index[select_newest(opened)]


class Dht:
    """Our use of py-libp2p's KadDHT in server mode."""

    def __init__(self, host: P2PHost, identity: Identity, *,
                 audit: AuditSink = NULL_AUDIT) -> None:
        self._host = host
        self._identity = identity
        self._audit = audit
        # Created before any dial: Identify caches protocols at connect time, and a
        # peer identified before the DHT existed is silently not added (notes §4.1).
        use_our_dht_protocol_id()
        self.kad = KadDHT(host.libp2p, DHTMode.SERVER, strict_validation=True)
        self.kad.register_validator(NAMESPACE, RecordValidator(audit))
        self._seq = int(time.time() * 1000)

    def _next_seq(self) -> int:
        # Milliseconds since the epoch, forced monotonic: newest record wins across restarts.
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return self._seq

    async def add_peer(self, peer_id: str) -> None:
        try:
            await self.kad.add_peer(ID.from_base58(peer_id), skip_server_mode_check=True)
        except Exception:  # the routing table refuses peers for many benign reasons
            logger.debug("DHT add_peer %s failed", peer_id, exc_info=True)

    def routing_peers(self) -> list[str]:
        return [str(p) for p in self.kad.routing_table.get_peer_ids()]

    async def refresh(self) -> None:
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            try:
                await self.kad.refresh_routing_table()
            except Exception:  # a refresh that fails is retried on the next round
                logger.debug("DHT refresh failed", exc_info=True)

    def _records(self, *, addrs: Sequence[str], models: Sequence[str],
                 ttl_s: float) -> list[tuple[str, bytes]]:
        """Our node record and name claim, sealed now: (key, value) pairs."""
        ident = self._identity
        expires = time.time() + ttl_s
        node = NodeRecord(peer_id=ident.peer_id, node_id=ident.node_id, name=ident.name,
                          addrs=tuple(addrs), models=tuple(models))
        claim = NameClaim(name=ident.name, peer_id=ident.peer_id, node_id=ident.node_id)
        return [(key, seal_record(kind, body, seq=self._next_seq(), expires_at=expires,  # type: ignore[arg-type]
                                  public_key=ident.public_key, sign=ident.sign))
                for kind, body, key in (("node", node, node_record_key(ident.peer_id)),
                                        ("name", claim, name_record_key(ident.name)))]

    async def publish(self, *, addrs: Sequence[str], models: Sequence[str], ttl_s: float,
                      digests: Sequence[str] = ()) -> None:
        """Publish our node record, our name claim and a provider record per model id
        and per file digest (``sha256:…``) we hold."""
        for key, value in self._records(addrs=addrs, models=models, ttl_s=ttl_s):
            await self._put(key, value)
        for ref in (*models, *digests):
            with trio.move_on_after(DHT_OP_TIMEOUT_S):
                try:
                    await self.kad.provide(provider_key(ref))
                except Exception:
                    logger.info("providing %s in the DHT failed", ref, exc_info=True)

    def store_local(self, *, addrs: Sequence[str], models: Sequence[str],
                    ttl_s: float) -> None:
        """Keep our node record and name claim in our own store only (no network).

        With an empty routing table there is nobody to publish to, but a peer that
        dials us (a js-libp2p client that does not listen is never a table entry) and
        asks GET_VALUE for our records must still find them here.
        """
        for key, value in self._records(addrs=addrs, models=models, ttl_s=ttl_s):
            self.kad.value_store.put(key.encode(), value)

    async def _put(self, key: str, value: bytes) -> None:
        with trio.move_on_after(DHT_OP_TIMEOUT_S) as scope:
            try:
                await self.kad.put_value(key, value)
            except ValueError as exc:
                # Another live node holds a newer record under our name: a name conflict.
                logger.warning("DHT refused our record %s: %s", key, exc)
            except Exception:
                logger.info("DHT put %s failed", key, exc_info=True)
        if scope.cancelled_caught:
            logger.info("DHT put %s timed out after %s s", key, DHT_OP_TIMEOUT_S)

    async def _get(self, key: str) -> SignedRecord | None:
        fast = await self._get_one_hop(key)
        if fast is not None:
            return fast
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            try:
                value = await self.kad.get_value(key)
            except Exception:
                logger.debug("DHT get %s failed", key, exc_info=True)
                return None
            if value is None:
                return None
            try:
                return open_record(key, value, now=time.time(), verify=verify,
                                   peer_id_of=peer_id_of)
            except RecordError as exc:
                logger.info("DHT returned an invalid record for %s: %s", key, exc)
                audit_events.invalid_record(self._audit, kind=RecordKind.DHT, peer=None,
                                            key=key, reason=str(exc))
                return None
        return None

    async def _get_one_hop(self, key: str) -> SignedRecord | None:
        """Ask the closest peers we already know, in parallel, in one round.

        py-libp2p's get_value first runs a full iterative FIND_NODE walk (hundreds of ms
        in a 20-node mesh on 2 cores). Records are stored at the k closest peers, and in
        a small or well-connected mesh our table already holds them: one round of GET_VALUE
        to the closest few finds the record in a few ms. Empty answers fall back to the
        full walk. Newest-wins still holds among the answers we wait for.
        """
        key_bytes = key.encode()
        try:
            closest = self.kad.routing_table.find_local_closest_peers(key_bytes, ONE_HOP_FANOUT)
        except Exception:  # an empty or mid-refresh table: use the full walk
            logger.debug("closest-peer lookup failed for %s", key, exc_info=True)
            return None
        found: list[SignedRecord] = []
        now = time.time()

        async def ask(peer: ID) -> None:
            try:
                value = await self.kad.value_store._get_from_peer(peer, key_bytes)
            except Exception:  # that peer cannot answer; the others may
                logger.debug("GET_VALUE %s from %s failed", key, peer, exc_info=True)
                return
            if isinstance(value, bytes):
                try:
                    found.append(open_record(key, value, now=now, verify=verify,
                                             peer_id_of=peer_id_of))
                except RecordError as exc:
                    logger.info("peer %s returned an invalid record for %s: %s", peer, key, exc)
                    audit_events.invalid_record(self._audit, kind=RecordKind.DHT,
                                                peer=str(peer), key=key, reason=str(exc))

        with trio.move_on_after(ONE_HOP_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for peer in closest:
                    nursery.start_soon(ask, peer)
        local = self.kad.value_store.get(key_bytes)
        if local is not None:
            try:
                found.append(open_record(key, local.value, now=now, verify=verify,
                                         peer_id_of=peer_id_of))
            except RecordError:
                pass
        return found[select_newest(found)] if found else None

    async def find_name(self, name: str) -> NameClaim | None:
        rec = await self._get(name_record_key(name))
        return rec.body if rec is not None and isinstance(rec.body, NameClaim) else None

    async def find_node(self, peer_id: str) -> NodeRecord | None:
        rec = await self._get(node_record_key(peer_id))
        return rec.body if rec is not None and isinstance(rec.body, NodeRecord) else None

    async def find_providers(self, key: str, count: int = 20) -> list[tuple[str, list[str]]]:
        """Peers (id, addrs) that provide ``key``: a model id, or a file digest
        (``sha256:<64 hex>``) for whoever holds that file under any id."""
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            try:
                infos = await self.kad.find_providers(provider_key(key), count)
            except Exception:
                logger.debug("DHT find_providers %s failed", key, exc_info=True)
                return []
            # py-libp2p returns every peer's answer without de-duplicating them.
            merged: dict[str, list[str]] = {}
            for i in infos:
                addrs = merged.setdefault(str(i.peer_id), [])
                addrs.extend(a for a in map(str, i.addrs) if a not in addrs)
            return list(merged.items())
        return []


@asynccontextmanager
async def open_dht(host: P2PHost, identity: Identity, *,
                   audit: AuditSink = NULL_AUDIT) -> AsyncIterator[Dht]:
    dht = Dht(host, identity, audit=audit)
    async with background_trio_service(dht.kad):
        yield dht
