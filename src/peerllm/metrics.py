"""Prometheus metrics of one node, kept in a private registry (several nodes per process).

The API layer records every inference request it completes (``observe_request``); the
gauges (models, peers) are refreshed from the node's state right before each scrape.
Security counters take the bounded enums of ``peerllm.security_events`` as labels.

Label values that come from outside (a model a client asked for, a token's subject) go
through ``BoundedLabels``: a safe charset and length (a lone surrogate in a label used to
make every later ``/metrics`` fail with UnicodeEncodeError), and at most so many
distinct values, the rest counted under ``_other`` — so a hostile client can neither
break the exposition nor grow it without bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .security_events import AuthFailure, PeerLimit, RateLimitScope

Destination = Literal["local", "remote"]

# Latency buckets in seconds: from a cached tiny model on CPU up to a slow remote load.
_TTFT_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

OTHER: Final = "_other"
"""The label of every value past a BoundedLabels' limit."""
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


class Metrics:
    """The node's metrics. Every method is cheap and never blocks."""

    def __init__(self) -> None:
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
        self.peers = Gauge("peerllm_peers", "Known peers by state", ["state"], registry=r)
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
        model = self._models(model)
        self.requests.labels(model=model, destination=destination).inc()
        self.routed.labels(destination=destination).inc()
        if tokens > 0:
            self.tokens.labels(model=model).inc(tokens)
        if ttft_s is not None:
            self.ttft.labels(model=model).observe(max(ttft_s, 0.0))
        self.duration.labels(model=model).observe(max(total_s, 0.0))

    def observe_error(self, model: str, status: int) -> None:
        self.request_errors.labels(model=self._models(model), status=str(status)).inc()

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
        self.model_memory.clear()
        self.model_load.clear()
        for s in samples:  # our own models: the same label as their requests, unbounded
            model = safe_label(s.model)
            self.model_memory.labels(model=model).set(s.memory_bytes)
            if s.load_seconds is not None:
                self.model_load.labels(model=model).set(s.load_seconds)

    def set_peers(self, states: Mapping[str, int]) -> None:
        """Replace the peer gauge with ``states`` (state name -> number of peers)."""
        self.peers.clear()
        for state, count in states.items():
            self.peers.labels(state=state).set(count)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
