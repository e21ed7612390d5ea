"""The node's Prometheus metrics (pure; no node)."""

from __future__ import annotations

import pytest

from peerllm.metrics import (
    MAX_MODELS,
    MAX_SUBJECTS,
    OTHER,
    BoundedLabels,
    Metrics,
    ModelSample,
    safe_label,
)
from peerllm.security_events import AuthFailure, PeerLimit, RateLimitScope


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


def test_security_counters_export_every_label_at_zero_then_count() -> None:
    m = Metrics()
    text = m.render()[0].decode()
    for reason in AuthFailure:
        assert f'peerllm_auth_failures_total{{reason="{reason}"}} 0.0' in text
    for scope in RateLimitScope:
        assert f'peerllm_rate_limited_total{{scope="{scope}"}} 0.0' in text
    for limit in PeerLimit:
        assert f'peerllm_peer_limited_total{{limit="{limit}"}} 0.0' in text
    m.observe_auth_failure(AuthFailure.EXPIRED)
    m.observe_rate_limited(RateLimitScope.TOKEN_TOKENS)
    m.observe_peer_limited(PeerLimit.STREAMS)
    m.observe_peer_limited(PeerLimit.STREAMS)
    text = m.render()[0].decode()
    for line in ('peerllm_auth_failures_total{reason="expired"} 1.0',
                 'peerllm_rate_limited_total{scope="token_tokens"} 1.0',
                 'peerllm_peer_limited_total{limit="streams"} 2.0'):
        assert line in text, line


def test_a_reason_outside_the_enum_is_refused() -> None:
    with pytest.raises(ValueError, match="not_a_reason"):
        Metrics().observe_auth_failure("not_a_reason")  # type: ignore[arg-type]


def test_subject_counters_count_requests_and_tokens_both_ways() -> None:
    m = Metrics()
    m.observe_subject("alice", tokens_in=10, tokens_out=3)
    m.observe_subject("alice", tokens_in=2, tokens_out=0)
    text = m.render()[0].decode()
    for line in ('peerllm_subject_requests_total{subject="alice"} 2.0',
                 'peerllm_subject_tokens_total{direction="in",subject="alice"} 12.0',
                 'peerllm_subject_tokens_total{direction="out",subject="alice"} 3.0'):
        assert line in text, line


def test_subject_labels_are_bounded_the_rest_is_other() -> None:
    m = Metrics()
    for i in range(MAX_SUBJECTS + 25):
        m.observe_subject(f"user{i}", tokens_in=1, tokens_out=1)
    m.observe_subject("user0", tokens_in=1, tokens_out=1)  # an early one keeps its label
    text = m.render()[0].decode()
    subjects = {line.split('subject="')[1].split('"')[0] for line in text.splitlines()
                if line.startswith("peerllm_subject_requests_total{")}
    assert len(subjects) == MAX_SUBJECTS + 1 and OTHER in subjects
    assert f'peerllm_subject_requests_total{{subject="{OTHER}"}} 25.0' in text
    assert 'peerllm_subject_requests_total{subject="user0"} 2.0' in text


@pytest.mark.parametrize(("raw", "label"), [
    ("alice", "alice"), ("svc:ci/bot@example.org", "svc:ci/bot@example.org"),
    ("\ud800", "_"), ('a"b\nc\\d', "a_b_c_d"), ("jos\u00e9", "jos_"), ("", "_empty"),
    ("x" * 200, "x" * 64),
])
def test_label_values_are_sanitised(raw: str, label: str) -> None:
    assert safe_label(raw) == label


def test_hostile_label_values_never_break_the_exposition() -> None:
    """A lone surrogate in a model name once made every later scrape fail."""
    m = Metrics()
    m.observe_error("\ud800", 404)
    m.observe_subject("\udfff\x00", tokens_in=1, tokens_out=1)
    m.set_models([ModelSample(model="\ud800", memory_bytes=1, load_seconds=None)])
    text = m.render()[0].decode()
    assert 'peerllm_request_errors_total{model="_",status="404"} 1.0' in text
    assert 'peerllm_subject_requests_total{subject="__"} 1.0' in text


def test_model_labels_are_bounded_against_made_up_models() -> None:
    m = Metrics()
    for i in range(MAX_MODELS + 5):
        m.observe_error(f"nope{i}", 404)
    text = m.render()[0].decode()
    assert f'peerllm_request_errors_total{{model="{OTHER}",status="404"}} 5.0' in text


def test_bounded_labels_on_their_own() -> None:
    labels = BoundedLabels(2)
    assert [labels(v) for v in ("a", "b", "c", "a", "b\ud800")] == ["a", "b", OTHER, "a",
                                                                   OTHER]
