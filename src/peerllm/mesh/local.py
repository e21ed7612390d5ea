"""This node as the mesh sees it: identity, engine, resources, load, and our NodeInfo.

One object answers "what are we" for the router (as a SelfView), the node-info server
and the HTTP documents, so that a fact about ourselves is computed in one place.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Final

from .._version import __version__
from ..identity import Identity
from ..inference.engine import Engine
from ..inference.registry import ModelStatus
from ..inference.resources import GpuProbe, probe_resources
from ..wire import embed as we
from ..wire import infer as wi
from ..wire import nodeinfo as wni
from ..wire import revocations as wrev
from .replication import FEATURE as REPLICATION

FEATURES: Final = ("node-info", "dht-records", "mdns", "network-gate", "infer", "revocations",
                   "receipts", REPLICATION)


class LocalNode:
    """Our own identity, engine and the NodeInfo we sign and send (next ``seq`` each time)."""

    def __init__(self, *, identity: Identity, peer_id: str, engine: Engine | None,
                 addrs: Callable[[], list[str]], private_network: bool) -> None:
        self.identity = identity
        self._peer_id = peer_id
        self._engine = engine
        self._addrs = addrs
        self._private = private_network
        self.boot_nonce = secrets.token_bytes(16)
        self.started_at = time.time()
        self._seq = 0
        self._gpus = GpuProbe()

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def addrs(self) -> list[str]:
        return self._addrs()

    def resources(self) -> wni.Resources:
        return probe_resources(self._gpus)

    def model_statuses(self) -> list[ModelStatus]:
        """The models this node offers: node-info, the DHT, mDNS, routing and the API's
        model lists all come from here. A model whose file is known bad is left out
        (management still shows it, with its error, from the registry)."""
        if self._engine is None:
            return []
        return [st for st in self._engine.registry.list() if st.advertised]

    def model_ids(self) -> list[str]:
        return [m.id for m in self.model_statuses()]

    def capacity(self) -> int:
        """How many generations this node runs at once across its models."""
        if self._engine is None:
            return 0
        registry = self._engine.registry
        return sum(registry.concurrency(m) for m in self.model_ids()) \
            or registry.config.max_concurrent

    def prefixes(self, model_id: str) -> tuple[bytes, ...]:
        """The conversations ``model_id``'s batch slots still hold (inference.prefixes)."""
        return () if self._engine is None else self._engine.prefixes.live(model_id)

    def load(self, statuses: list[ModelStatus] | None = None) -> wni.Load:
        """Generations running and queued here, and how many can run at once."""
        statuses = self.model_statuses() if statuses is None else statuses
        return wni.Load(active=sum(m.active for m in statuses),
                        queued=sum(m.queued for m in statuses),
                        capacity=self.capacity() if statuses else 0)

    def node_info(self) -> wni.NodeInfo:
        """This node's NodeInfo right now (fresh resources, next seq)."""
        self._seq += 1
        ident = self.identity
        statuses = self.model_statuses()
        return wni.NodeInfo(
            protocol_version=wni.PROTOCOL_VERSION,
            software_version=__version__,
            peer_id=self.peer_id,
            node_id=ident.node_id,
            name=ident.name,
            location=ident.location,
            tags=ident.tags,
            boot_nonce=self.boot_nonce,
            started_at=self.started_at,
            issued_at=time.time(),
            seq=self._seq,
            addrs=tuple(self.addrs()),
            capabilities=wni.Capabilities(protocols=(wni.PROTOCOL_ID, wi.PROTOCOL_ID,
                                                     we.PROTOCOL_ID, wrev.PROTOCOL_ID),
                                          features=FEATURES, private_network=self._private),
            resources=self.resources(),
            models=tuple(wni.ModelInfo(id=m.id, loaded=m.state == "loaded",
                                       context_size=m.context_size,
                                       size_bytes=m.memory_bytes or None, tags=m.tags,
                                       file_bytes=m.file_bytes, digest=m.digest,
                                       replicas=m.replicas,
                                       prefixes=self.prefixes(m.id)
                                       if m.state == "loaded" else ())
                         for m in statuses),
            load=self.load(statuses),
            performance=wni.Performance(
                tokens_per_second=max((m.tokens_per_second for m in statuses
                                       if m.tokens_per_second is not None), default=None),
                ttft_ms=min((m.ttft_ms for m in statuses if m.ttft_ms is not None),
                            default=None)),
        )
