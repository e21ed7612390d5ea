"""Raw HTTP against a real node: hostile bodies, management, metrics, disconnects."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

import peerllm
from tests.helpers import MODEL, api_url, wait_until

HELLO = [{"role": "user", "content": "Say hello."}]

# (path, raw body, status, text the error must contain)
BAD_REQUESTS: list[tuple[str, bytes, int, str]] = [
    ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/chat/completions", b"[]", 400, "must be a JSON object"),
    ("/v1/chat/completions", b"", 400, "empty"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": "hi"}).encode(), 400,
     "messages"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": HELLO,
                                         "temperature": "hot"}).encode(), 400, "temperature"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": HELLO,
                                         "max_tokens": 10**9}).encode(), 400, "max_tokens"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": [
        {"role": "user", "content": "x" * (256 * 1024 + 1)}]}).encode(), 400, "limit"),
    ("/v1/chat/completions", json.dumps({"model": "nope", "messages": HELLO}).encode(), 404,
     "nope"),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": 5}).encode(), 400, "prompt"),
    ("/v1/embeddings", json.dumps({"model": MODEL, "input": [1, 2]}).encode(), 400, "input"),
    ("/v1/embeddings", json.dumps({"model": "nope", "input": "x"}).encode(), 404, "nope"),
    ("/v1/models/load", json.dumps({"model": "nope"}).encode(), 404, "nope"),
    ("/api/chat", b"{", 400, "not valid JSON"),
    ("/api/chat", json.dumps({"model": MODEL, "messages": [{"role": "user"}]}).encode(), 400,
     "messages[0].content"),
    ("/api/generate", json.dumps({"model": "nope", "prompt": "x"}).encode(), 404, "nope"),
    ("/api/show", json.dumps({"model": "nope"}).encode(), 404, "nope"),
]


def error_text(path: str, body: Any) -> str:
    if path.startswith("/api/"):
        assert isinstance(body["error"], str)  # Ollama's shape
        return body["error"]
    err = body["error"]  # OpenAI's shape
    assert set(err) == {"message", "type", "param", "code"}
    return str(err["message"])


async def test_bad_requests_get_clear_4xx(node: peerllm.Node) -> None:
    async with httpx.AsyncClient(base_url=api_url(node), trust_env=False, timeout=30) as http:
        for path, body, status, fragment in BAD_REQUESTS:
            r = await http.post(path, content=body,
                                headers={"content-type": "application/json"})
            assert r.status_code == status, (path, body[:80], r.text)
            assert fragment in error_text(path, r.json()), (path, r.text)
        # Still serving, and a good request still works.
        r = await http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": HELLO, "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200 and r.headers["x-peerllm-served-by"] == node.peer_id


async def test_management_and_metrics(node: peerllm.Node) -> None:
    async with httpx.AsyncClient(base_url=api_url(node), trust_env=False, timeout=60) as http:
        r = await http.post("/v1/models/load", json={"model": MODEL, "warmup": True})
        assert r.status_code == 200, r.text
        st = r.json()
        assert st["id"] == MODEL and st["state"] == "loaded" and st["local"] is True
        assert st["memory_bytes"] > 0 and st["tokens_per_second"] is not None

        r = await http.post(f"/v1/models/{MODEL}/warmup", json={"tokens": 2})
        assert r.status_code == 200 and r.json()["state"] == "loaded"

        r = await http.post("/api/generate", json={
            "model": MODEL, "prompt": "Hi", "stream": False,
            "options": {"num_predict": 3, "temperature": 0}})
        assert r.status_code == 200 and r.json()["done"] is True

        st = (await http.get(f"/v1/models/{MODEL}")).json()
        assert st["object"] == "model" and st["state"] == "loaded"
        assert st["tokens_generated"] > 0 and st["active"] == 0
        assert [p["peer_id"] for p in st["peerllm"]["providers"]] == [node.peer_id]

        r = await http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert f'peerllm_requests_total{{destination="local",model="{MODEL}"}} 1.0' in text
        assert f'peerllm_model_memory_bytes{{model="{MODEL}"}}' in text
        assert 'peerllm_routed_requests_total{destination="local"} 1.0' in text
        assert f'peerllm_ttft_seconds_count{{model="{MODEL}"}} 1.0' in text

        r = await http.delete(f"/v1/models/{MODEL}")
        assert r.status_code == 200 and r.json()["state"] != "loaded"
        assert (await http.get("/v1/models/nope")).status_code == 404


async def test_client_disconnect_cancels_generation(node: peerllm.Node) -> None:
    assert node.engine is not None
    registry = node.engine.registry
    url = httpx.URL(api_url(node))
    assert url.port is not None
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": 2000, "temperature": 0,
                       "messages": [{"role": "user", "content": "Count from 1 to 1000."}]})
    # A bare socket, so "the client went away" is exactly one close() (HTTP client
    # libraries leave their own generators behind when a stream is abandoned).
    sock = await trio.open_tcp_stream(url.host, url.port)
    async with sock:
        await sock.send_all((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.host}\r\n"
                             "Content-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        seen = b""
        while b'"content"' not in seen:
            data = await sock.receive_some(65536)
            assert data, seen
            seen += data
        head = seen.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200")
        assert b"x-peerllm-served-by-name: " + node.name.encode() in head
        assert registry.status(MODEL).active == 1
    # The connection is closed mid-stream: generation must stop.
    await wait_until(lambda: registry.status(MODEL).active == 0, timeout_s=5,
                     what="the generation to be cancelled")
    assert registry.status(MODEL).tokens_generated < 2000
