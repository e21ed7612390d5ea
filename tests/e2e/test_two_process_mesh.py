"""Two `peerllm node` processes: B (no model) bootstraps to A (bundled model).

The official openai and ollama clients talk to B; A serves every request.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import MODEL, Daemon, clean_env, free_port, peerllm_cmd, poll_until


def models_of(d: Daemon) -> list[str]:
    return [m["id"] for m in httpx.get(f"{d.api}/v1/models", trust_env=False).json()["data"]]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    root = tmp_path_factory.mktemp("mesh")
    a = Daemon("serve-a", root / "a", free_port(), free_port())
    b = Daemon("front-b", root / "b", free_port(), free_port())
    try:
        a.start("--no-mdns", default_model=True)
        b.start("--no-mdns", "--bootstrap", a.addr)
        poll_until(lambda: models_of(b), lambda ids: MODEL in ids, timeout_s=60,
                   what="B to learn that A serves the model")
        yield a, b
        # A node with a loaded model still stops promptly on SIGTERM.
        assert b.stop() < 5.0
        assert a.stop() < 5.0
    finally:
        for d in (b, a):
            d.stop()


def test_openai_client_through_b_is_served_by_a(mesh: tuple[Daemon, Daemon]) -> None:
    import openai

    a, b = mesh
    http = httpx.Client(trust_env=False)
    client = openai.OpenAI(base_url=f"{b.api}/v1", api_key="unused", http_client=http)
    listed = [m.id for m in client.models.list()]
    assert MODEL in listed

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
        temperature=0)
    assert raw.headers["x-peerllm-served-by"] == a.peer_id
    assert raw.headers["x-peerllm-node-name"] == "front-b"
    chat = raw.parse()
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert 0 < chat.usage.completion_tokens <= 8

    pieces = []
    for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count: one, two,"}],
            max_tokens=8, temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces)

    comp = client.completions.create(model=MODEL, prompt="The capital of France is",
                                     max_tokens=8, temperature=0)
    assert comp.choices[0].text
    assert comp.usage is not None
    assert comp.usage.completion_tokens > 0
    http.close()


def test_ollama_client_through_b(mesh: tuple[Daemon, Daemon]) -> None:
    import ollama

    _, b = mesh
    client = ollama.Client(host=b.api, trust_env=False)
    names = [m.model for m in client.list().models]
    assert MODEL in names
    answer = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                         options={"num_predict": 8, "temperature": 0})
    assert answer.message.content
    parts = [p.response for p in client.generate(model=MODEL, prompt="Once upon a time",
                                                 stream=True,
                                                 options={"num_predict": 8, "temperature": 0})]
    assert "".join(parts)
    client.close()


def test_cli_run_and_models(mesh: tuple[Daemon, Daemon]) -> None:
    _, b = mesh
    env = clean_env()
    out = subprocess.run(peerllm_cmd("models", "--json", "--api", b.api), capture_output=True,
                         text=True, env=env, timeout=60, check=True)
    assert MODEL in out.stdout
    assert "serve-a" in out.stdout
    run = subprocess.run(peerllm_cmd("run", MODEL, "The sky is", "--raw", "--max-tokens", "6",
                                     "--temperature", "0", "--api", b.api),
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    assert run.stdout.strip()
    assert "served by serve-a" in run.stderr


def test_errors_are_4xx_and_node_keeps_serving(mesh: tuple[Daemon, Daemon]) -> None:
    a, b = mesh
    with httpx.Client(base_url=a.api, trust_env=False) as http:
        local = http.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 4000,
                                                   "max_tokens": 4})
        assert local.status_code == 400, local.text
    with httpx.Client(base_url=b.api, trust_env=False) as http:
        bad = [
            http.post("/v1/chat/completions", content=b"{not json",
                      headers={"content-type": "application/json"}),
            http.post("/v1/chat/completions", json={"model": MODEL, "messages": "hi"}),
            http.post("/v1/chat/completions", json={"model": "no-such-model",
                                                    "messages": [{"role": "user",
                                                                  "content": "x"}]}),
            http.post("/v1/completions", json={"model": MODEL, "prompt": "x" * 300_000}),
            http.post("/v1/completions", json={"model": MODEL, "prompt": "x",
                                               "temperature": "hot"}),
        ]
        for r in bad:
            assert 400 <= r.status_code < 500, (r.status_code, r.text)
            assert r.json()["error"]["message"]
        # Longer than the model's context window: refused by the serving node (A), and
        # the refusal comes back through B as a 400, not a 5xx.
        too_long = http.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 4000,
                                                      "max_tokens": 4})
        assert too_long.status_code == 400, too_long.text
        ok = http.post("/v1/completions", json={"model": MODEL, "prompt": "Hello",
                                                "max_tokens": 4, "temperature": 0})
        assert ok.status_code == 200




def test_route_is_explained(mesh: tuple[Daemon, Daemon]) -> None:
    a, b = mesh
    doc = httpx.get(f"{b.api}/v1/route", params={"model": MODEL}, trust_env=False).json()
    assert doc["strategy"] == "mcda"
    assert abs(sum(doc["weights"].values()) - 1.0) < 1e-9
    (cand,) = doc["candidates"]
    assert cand["peer_id"] == a.peer_id
    assert set(cand["criteria"]) == {"free_memory", "load", "latency", "throughput"}
    parts = sum(c["contribution"] for c in cand["criteria"].values())
    assert abs(parts * cand["multiplier"] - cand["score"]) < 1e-3
    assert cand["breaker"].startswith("closed")
    missing = httpx.get(f"{b.api}/v1/route", params={"model": "nope"}, trust_env=False).json()
    assert missing["candidates"] == []
    out = subprocess.run(peerllm_cmd("route", MODEL, "--api", b.api), capture_output=True,
                         text=True, env=clean_env(), timeout=60, check=True)
    assert "serve-a" in out.stdout
    r = httpx.post(f"{b.api}/v1/completions", json={"model": MODEL, "prompt": "Hi",
                                                    "max_tokens": 2}, trust_env=False,
                   timeout=60)
    assert float(r.headers["x-peerllm-score"]) > 0
    # While a request runs on A, B schedules with A's load (from A's `accepted` or a
    # node-info refresh since) and its own in-flight count.
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 256, "stream": True}
    with httpx.stream("POST", f"{b.api}/v1/completions", json=body, trust_env=False,
                      timeout=60) as resp:
        # Once A has produced text the request is certainly in flight.
        lines = resp.iter_lines()  # kept: dropping it would close the response
        next(line for line in lines if '"text":"' in line and '"text":""' not in line)
        (busy,) = httpx.get(f"{b.api}/v1/route", params={"model": MODEL},
                            trust_env=False).json()["candidates"]
        assert sum(1 for line in lines if line.startswith("data: ")) > 1  # not cut short
    assert busy["load"]["from"] in ("accepted", "node-info")
    load = busy["load"]
    assert load["active"] + load["queued"] >= 1 and load["in_flight"] == 1, load
    row = next(p for p in b.peers_json()["peers"] if p["peer_id"] == a.peer_id)
    assert row["breaker"].startswith("closed")
