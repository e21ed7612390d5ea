"""``GET /metrics`` on a two-node mesh: bounded labels under hostile model ids, and the
operator gauges (breakers, queue depth, active streams, node identity)."""

from __future__ import annotations

import json

import httpx

import peerllm
from peerllm.api import open_api
from peerllm.testing import FakeBackend
from tests.helpers import (
    FAKE_MODEL,
    MakeConfig,
    api_url,
    healthy_names,
    wait_until,
    with_fake_model,
)

UNKNOWN_IDS = 300


async def chat(http: httpx.AsyncClient, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    # json.dumps escapes a lone surrogate as \ud800, as a hostile client would send it.
    return await http.post("/v1/chat/completions", content=json.dumps(body),
                           headers={"content-type": "application/json"})


async def test_hostile_model_ids_never_break_or_grow_metrics(make_config: MakeConfig) -> None:
    async with peerllm.open_node(with_fake_model(make_config("a")), backend=FakeBackend()) as a, \
            peerllm.open_node(make_config("b", bootstrap=[a.addrs()[0]])) as b, \
            open_api(b), httpx.AsyncClient(base_url=api_url(b), trust_env=False) as http:
        await wait_until(lambda: "a" in healthy_names(b.peers()), what="b sees a")
        assert (await chat(http, FAKE_MODEL)).status_code == 200
        baseline = await http.get("/metrics")
        assert baseline.status_code == 200
        assert (await chat(http, "\ud800")).status_code in (400, 404)  # never a 5xx
        for i in range(UNKNOWN_IDS):
            assert (await chat(http, f"nope-{i}")).status_code == 404
        scraped = await http.get("/metrics")
        assert scraped.status_code == 200
        text = scraped.text
        # The unknown ids are one series; the served model keeps its own label.
        assert len(scraped.content) - len(baseline.content) < 1000
        unknown = [line for line in text.splitlines() if line.startswith(
            'peerllm_request_errors_total{model="unknown",status="404"}')]
        assert len(unknown) == 1 and float(unknown[0].split()[-1]) >= UNKNOWN_IDS
        assert f'peerllm_requests_total{{destination="remote",model="{FAKE_MODEL}"}} 1.0' in text
        # The answered request's stream to a is closed or kept for the next one, no more.
        assert 'peerllm_opened_streams{state="active"} 0.0' in text
        assert 'peerllm_opened_streams{state="idle"} 1.0' in text
        assert "nope-" not in text
        assert f'peerllm_peer_breaker_state{{name="a",peer="{a.peer_id}"}} 0.0' in text
        assert (f'peerllm_node_info{{name="b",peer_id="{b.peer_id}",'
                f'version="{peerllm.__version__}"}} 1.0') in text
        # Each unknown id was negative-cached after its one DHT lookup.
        assert len(b.membership.unknown_models) >= UNKNOWN_IDS


async def test_the_serving_node_shows_its_queue_and_streams(make_config: MakeConfig) -> None:
    async with peerllm.open_node(with_fake_model(make_config("a")), backend=FakeBackend()) as a, \
            open_api(a), httpx.AsyncClient(base_url=api_url(a), trust_env=False) as http:
        assert (await chat(http, FAKE_MODEL)).status_code == 200
        text = (await http.get("/metrics")).text
    for line in (f'peerllm_model_active{{model="{FAKE_MODEL}"}} 0.0',
                 f'peerllm_model_queue_depth{{model="{FAKE_MODEL}"}} 0.0',
                 "peerllm_served_streams 0.0"):
        assert line in text, line
