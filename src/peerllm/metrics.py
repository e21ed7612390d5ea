"""Prometheus metrics of one node, kept in a private registry (several nodes per process).

The API layer records every inference request it completes (``observe_request``); the
gauges (models, peers) are refreshed from the node's state right before each scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

Destination = Literal["local", "remote"]

# Latency buckets in seconds: from a cached tiny model on CPU up to a slow remote load.
_TTFT_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


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

    def observe_request(self, model: str, destination: Destination, *, ttft_s: float | None,
                        total_s: float, tokens: int) -> None:
        """Record one completed generation (``ttft_s`` is None when nothing was produced)."""
        self.requests.labels(model=model, destination=destination).inc()
        self.routed.labels(destination=destination).inc()
        if tokens > 0:
            self.tokens.labels(model=model).inc(tokens)
        if ttft_s is not None:
            self.ttft.labels(model=model).observe(max(ttft_s, 0.0))
        self.duration.labels(model=model).observe(max(total_s, 0.0))

    def observe_error(self, model: str, status: int) -> None:
        self.request_errors.labels(model=model, status=str(status)).inc()

    def set_models(self, samples: Iterable[ModelSample]) -> None:
        """Replace the model gauges: models that are gone lose their series."""
        self.model_memory.clear()
        self.model_load.clear()
        for s in samples:
            self.model_memory.labels(model=s.model).set(s.memory_bytes)
            if s.load_seconds is not None:
                self.model_load.labels(model=s.model).set(s.load_seconds)

    def set_peers(self, states: Mapping[str, int]) -> None:
        """Replace the peer gauge with ``states`` (state name -> number of peers)."""
        self.peers.clear()
        for state, count in states.items():
            self.peers.labels(state=state).set(count)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
