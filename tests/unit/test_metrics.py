"""The node's Prometheus metrics (pure; no node)."""

from __future__ import annotations

from peerllm.metrics import Metrics, ModelSample


def test_requests_and_gauges_render() -> None:
    m = Metrics()
    m.observe_request("a", "local", ttft_s=0.2, total_s=1.0, tokens=7)
    m.observe_request("a", "remote", ttft_s=None, total_s=0.5, tokens=0)
    m.observe_error("a", 503)
    m.set_models([ModelSample(model="a", memory_bytes=1000, load_seconds=1.5)])
    m.set_peers({"healthy": 2, "stale": 1})
    body, content_type = m.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    for line in ('peerllm_requests_total{destination="local",model="a"} 1.0',
                 'peerllm_requests_total{destination="remote",model="a"} 1.0',
                 'peerllm_routed_requests_total{destination="remote"} 1.0',
                 'peerllm_tokens_generated_total{model="a"} 7.0',
                 'peerllm_ttft_seconds_count{model="a"} 1.0',
                 'peerllm_request_duration_seconds_count{model="a"} 2.0',
                 'peerllm_request_errors_total{model="a",status="503"} 1.0',
                 'peerllm_model_memory_bytes{model="a"} 1000.0',
                 'peerllm_model_load_seconds{model="a"} 1.5',
                 'peerllm_peers{state="healthy"} 2.0'):
        assert line in text, line


def test_gauges_are_replaced_and_registries_are_private() -> None:
    m, other = Metrics(), Metrics()
    m.set_peers({"healthy": 2})
    m.set_peers({"stale": 1})
    m.set_models([ModelSample(model="a", memory_bytes=1, load_seconds=None)])
    m.set_models([])
    text = m.render()[0].decode()
    assert 'state="healthy"' not in text and 'peerllm_peers{state="stale"} 1.0' in text
    assert 'model="a"' not in text
    assert 'state="stale"' not in other.render()[0].decode()
