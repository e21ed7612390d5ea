"""Prometheus metrics of one node, kept in a private registry (several nodes per process).

The API layer records every inference request it completes (``observe_request``); the
gauges (models, peers) are refreshed from the node's state right before each scrape.
Security counters take the bounded enums of ``peerllm.security_events`` as labels.

Label values that come from outside (a model a client asked for, a token's subject) go
through ``BoundedLabels``: a safe charset and length (a lone surrogate in a label used to
make every later ``/metrics`` fail with UnicodeEncodeError), and at most so many
distinct values, the rest counted under ``_other`` — so a hostile client can neither
break the exposition nor grow it without bound. A model id gets its own label only when
the mesh serves it (the ``serves`` predicate the node passes in); every other id a
client sends is counted under ``unknown``. Rendering is per metric family, so one
family that cannot be rendered is left out (logged once) instead of failing the scrape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .scheduling.breaker import BreakerState
from .security_events import AuthFailure, PeerLimit, RateLimitScope

logger = logging.getLogger(__name__)

Destination = Literal["local", "remote"]

# Latency buckets in seconds: from a cached tiny model on CPU up to a slow remote load.
_TTFT_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

OTHER: Final = "_other"
"""The label of every value past a BoundedLabels' limit."""
UNKNOWN: Final = "unknown"
"""The model label of every request for a model the mesh does not serve."""
BREAKER_VALUES: Final = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1,
                         BreakerState.OPEN: 2}
EMPTY: Final = "_empty"
MAX_LABEL_CHARS: Final = 64
MAX_SUBJECTS: Final = 50
MAX_MODELS: Final = 100
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.:@/+-]")


def safe_label(value: str) -> str:
    """``value`` in a charset every Prometheus reader takes (``[A-Za-z0-9_.:@/+-]``, the
    rest as ``_``: lone surrogates, quotes, newlines, non-ASCII), cut to 64 characters."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_CHARS]) or EMPTY


class BoundedLabels:
    """Maps outside values to label values: the first ``limit`` distinct ones (after
    ``safe_label``) keep their own label for the node's life, later ones are ``_other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        label = safe_label(value)
        if label in self._seen:
            return label
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(label)
        return label


@dataclass(frozen=True, kw_only=True)
class ModelSample:
    """What the model gauges show for one local model."""

    model: str
    memory_bytes: int
    load_seconds: float | None
    active: int = 0
    queued: int = 0


@dataclass(frozen=True, kw_only=True)
class BreakerSample:
    """One known peer's circuit breaker, as the breaker gauge shows it."""

    peer_id: str
    name: str
    state: BreakerState


def _serves_all(model: str) -> bool:
    return True


class _Family(Collector):
    """One metric family as a collector, so it renders (or fails) on its own."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterator[Metric]:
        yield self._family


class Metrics:
    """The node's metrics. Every method is cheap and never blocks.

    ``serves(model)``: whether the mesh serves ``model`` right now (only those get their
    own model label); the default, for a metrics object without a node, is every model.
    """

    def __init__(self, *, serves: Callable[[str], bool] = _serves_all) -> None:
        self._serves = serves
        self._failed: set[str] = set()  # families whose rendering failed (logged once)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("peerllm_requests", "Inference requests completed through the API",
                                ["model", "destination"], registry=r)
        self.request_errors = Counter("peerllm_request_errors",
                                      "Inference requests that failed, by HTTP status",
                                      ["model", "status"], registry=r)
        self.tokens = Counter("peerllm_tokens_generated", "Completion tokens returned",
                              ["model"], registry=r)
        self.ttft = Histogram("peerllm_ttft_seconds", "Time to first token seen by the API",
                              ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self.duration = Histogram("peerllm_request_duration_seconds",
                                  "Time from request to last token", ["model"],
                                  buckets=_DURATION_BUCKETS, registry=r)
        self.model_memory = Gauge("peerllm_model_memory_bytes",
                                  "Memory held by a loaded local model", ["model"], registry=r)
        self.model_load = Gauge("peerllm_model_load_seconds",
                                "How long the last load of a local model took", ["model"],
                                registry=r)
        self.model_active = Gauge("peerllm_model_active",
                                  "Generations running on a local model", ["model"],
                                  registry=r)
        self.model_queued = Gauge("peerllm_model_queue_depth",
                                  "Requests waiting for a local model", ["model"], registry=r)
        self.peers = Gauge("peerllm_peers", "Known peers by state", ["state"], registry=r)
        self.breakers = Gauge("peerllm_peer_breaker_state",
                              "Each known peer's circuit breaker: 0 closed, 1 half-open, "
                              "2 open", ["peer", "name"], registry=r)
        self.served_streams = Gauge("peerllm_served_streams",
                                    "Inference streams this node is serving for peers",
                                    registry=r)
        self.opened_streams = Gauge("peerllm_opened_streams",
                                    "Inference streams this node has open to peers: "
                                    "answering now (active) or kept for reuse (idle)",
                                    ["state"], registry=r)
        self.node_info = Gauge("peerllm_node_info", "This node's identity (always 1)",
                               ["name", "peer_id", "version"], registry=r)
        self.routed = Counter("peerllm_routed_requests",
                              "Generations placed, by where they ran", ["destination"],
                              registry=r)
        for dest in ("local", "remote"):
            self.routed.labels(destination=dest)  # export zeros before the first request
        self._models = BoundedLabels(MAX_MODELS)  # a 404'd model name is a client's string
        self._subjects = BoundedLabels(MAX_SUBJECTS)
        self._security_counters(r)

    def _security_counters(self, r: CollectorRegistry) -> None:
        self.auth_failures = Counter("peerllm_auth_failures",
                                     "Requests refused for their credential, by reason",
                                     ["reason"], registry=r)
        self.rate_limited = Counter("peerllm_rate_limited",
                                    "Requests refused by a token's rate, by which rate",
                                    ["scope"], registry=r)
        self.peer_limited = Counter("peerllm_peer_limited",
                                    "Peer streams or calls refused by a per-peer limit",
                                    ["limit"], registry=r)
        self.subject_requests = Counter("peerllm_subject_requests",
                                        "Inference requests by token subject", ["subject"],
                                        registry=r)
        self.subject_tokens = Counter("peerllm_subject_tokens",
                                      "Tokens by token subject and direction (in = prompt)",
                                      ["subject", "direction"], registry=r)
        # Every label value is known up front: export zeros, so a dashboard's rate() has
        # a series before the first refusal.
        for reason in AuthFailure:
            self.auth_failures.labels(reason=reason.value)
        for scope in RateLimitScope:
            self.rate_limited.labels(scope=scope.value)
        for limit in PeerLimit:
            self.peer_limited.labels(limit=limit.value)

    def observe_request(self, model: str, destination: Destination, *, ttft_s: float | None,
                        total_s: float, tokens: int) -> None:
        """Record one completed generation (``ttft_s`` is None when nothing was produced)."""
        model = self.model_label(model)
        self.requests.labels(model=model, destination=destination).inc()
        self.routed.labels(destination=destination).inc()
        if tokens > 0:
            self.tokens.labels(model=model).inc(tokens)
        if ttft_s is not None:
            self.ttft.labels(model=model).observe(max(ttft_s, 0.0))
        self.duration.labels(model=model).observe(max(total_s, 0.0))

    def model_label(self, model: str) -> str:
        """``model``'s label: its own when the mesh serves it, else ``unknown``."""
        if not self._serves(model):
            return UNKNOWN
        return self._models(model)  # bounded anyway: node-info is a peer's word

    def observe_error(self, model: str, status: int) -> None:
        self.request_errors.labels(model=self.model_label(model), status=str(status)).inc()

    def observe_auth_failure(self, reason: AuthFailure) -> None:
        self.auth_failures.labels(reason=AuthFailure(reason).value).inc()

    def observe_rate_limited(self, scope: RateLimitScope) -> None:
        self.rate_limited.labels(scope=RateLimitScope(scope).value).inc()

    def observe_peer_limited(self, limit: PeerLimit) -> None:
        self.peer_limited.labels(limit=PeerLimit(limit).value).inc()

    def observe_subject(self, subject: str, *, tokens_in: int, tokens_out: int) -> None:
        """Record one inference request of token subject ``subject`` (bounded label)."""
        label = self._subjects(subject)
        self.subject_requests.labels(subject=label).inc()
        if tokens_in > 0:
            self.subject_tokens.labels(subject=label, direction="in").inc(tokens_in)
        if tokens_out > 0:
            self.subject_tokens.labels(subject=label, direction="out").inc(tokens_out)

    def set_models(self, samples: Iterable[ModelSample]) -> None:
        """Replace the model gauges: models that are gone lose their series."""
        gauges = (self.model_memory, self.model_load, self.model_active, self.model_queued)
        for gauge in gauges:
            gauge.clear()
        for s in samples:  # our own models: the same label as their requests, unbounded
            model = safe_label(s.model)
            self.model_memory.labels(model=model).set(s.memory_bytes)
            self.model_active.labels(model=model).set(s.active)
            self.model_queued.labels(model=model).set(s.queued)
            if s.load_seconds is not None:
                self.model_load.labels(model=model).set(s.load_seconds)

    def set_peers(self, states: Mapping[str, int]) -> None:
        """Replace the peer gauge with ``states`` (state name -> number of peers)."""
        self.peers.clear()
        for state, count in states.items():
            self.peers.labels(state=state).set(count)

    def set_breakers(self, samples: Iterable[BreakerSample]) -> None:
        """Replace the breaker gauge (one series per known peer: bounded by max_peers)."""
        self.breakers.clear()
        for s in samples:
            self.breakers.labels(peer=safe_label(s.peer_id), name=safe_label(s.name)).set(
                BREAKER_VALUES[s.state])

    def set_served_streams(self, active: int) -> None:
        self.served_streams.set(active)

    def set_opened_streams(self, *, active: int, idle: int) -> None:
        self.opened_streams.labels(state="active").set(active)
        self.opened_streams.labels(state="idle").set(idle)

    def set_node_info(self, *, name: str, peer_id: str, version: str) -> None:
        self.node_info.clear()
        self.node_info.labels(name=safe_label(name), peer_id=safe_label(peer_id),
                              version=safe_label(version)).set(1)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type; never raises.

        Each family renders on its own: one that fails (a label no encoder takes, a
        collector that breaks) is left out and logged once, and the rest is served.
        """
        parts: list[bytes] = []
        try:
            families = list(self.registry.collect())
        except Exception:  # a broken collector must not take the whole scrape down
            self._failed_once("<collect>")
            return b"", CONTENT_TYPE_LATEST
        for family in families:
            try:
                parts.append(generate_latest(_Family(family)))
            except Exception:  # any failure: leave this family out
                self._failed_once(family.name)
        return b"".join(parts), CONTENT_TYPE_LATEST

    def _failed_once(self, family: str) -> None:
        if family not in self._failed:
            self._failed.add(family)
            logger.error("metric family %s could not be rendered; it is left out of "
                         "/metrics", family)
