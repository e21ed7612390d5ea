"""A real `peerllm node` against what a web page can make a browser send: cross-site
`text/plain` POSTs and DNS-rebinding Host names are refused and change nothing; the
origin the operator allowed gets CORS. The model is registered but never loaded."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from peerllm.api.origin import EXPOSE_HEADERS
from tests.helpers import MODEL, Daemon

EVIL = "http://evil.example"
APP = "http://localhost:3000"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.fixture
def node(daemon: Callable[[str], Daemon]) -> Iterator[tuple[Daemon, httpx.Client]]:
    d = daemon("guarded")
    d.start("--no-mdns", "--no-dht", "--cors-origin", APP, default_model=True)
    with httpx.Client(base_url=d.api, trust_env=False, timeout=30) as http:
        yield d, http


def model_state(http: httpx.Client) -> dict[str, Any]:
    doc: dict[str, Any] = http.get(f"/v1/models/{MODEL}").json()
    return {k: doc[k] for k in ("state", "requests", "memory_bytes")}


def cross_site(origin: str = EVIL) -> dict[str, str]:
    # A <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}): sent without preflight.
    return {"origin": origin, "content-type": "text/plain"}


def test_cross_site_posts_are_refused_and_change_nothing(
        node: tuple[Daemon, httpx.Client]) -> None:
    _, http = node
    before = model_state(http)
    assert before["state"] != "loaded"
    load = http.post("/v1/models/load", content=json.dumps({"model": MODEL}),
                     headers=cross_site())
    assert load.status_code == 403
    assert load.json()["error"] == {
        "message": f"origin '{EVIL}' is not allowed; add it to api.cors_origins",
        "type": "invalid_request_error", "param": None, "code": "origin_not_allowed"}
    chat = http.post("/api/chat", content=json.dumps(CHAT), headers=cross_site())
    assert chat.status_code == 403
    assert chat.json() == {"error": f"origin '{EVIL}' is not allowed; add it to "
                                    "api.cors_origins"}
    for method, path in (("DELETE", f"/v1/models/{MODEL}"), ("POST", "/v1/chat/completions"),
                         ("POST", f"/v1/models/{MODEL}/warmup")):
        r = http.request(method, path, content=b"{}", headers=cross_site())
        assert r.status_code == 403, (method, path)
        assert "access-control-allow-origin" not in r.headers
        assert "x-peerllm-node-id" not in r.headers  # refused before any route or header
    assert model_state(http) == before


def test_a_rebinding_host_is_refused(node: tuple[Daemon, httpx.Client]) -> None:
    d, http = node
    for path in ("/v1/node/info", "/api/tags"):
        r = http.get(path, headers={"host": f"evil.example:{d.api_port}"})
        assert r.status_code == 403, path
        assert "x-peerllm-node-id" not in r.headers
    info = http.get("/v1/node/info", headers={"host": f"evil.example:{d.api_port}"}).json()
    assert "host 'evil.example' is not allowed; add it to api.allowed_hosts" in \
        info["error"]["message"]
    assert http.get("/v1/node/info", headers={"host": f"localhost:{d.api_port}"}) \
        .status_code == 200


def test_the_allowed_origin_gets_cors(node: tuple[Daemon, httpx.Client]) -> None:
    _, http = node
    pre = http.options("/v1/chat/completions", headers={
        "origin": APP, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == APP
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= set(
        pre.headers["access-control-allow-headers"].split(", "))
    assert int(pre.headers["access-control-max-age"]) > 0
    assert "Origin" in pre.headers["vary"]
    refused = http.options("/v1/chat/completions", headers={
        "origin": EVIL, "access-control-request-method": "POST"})
    assert refused.status_code == 403
    r = http.get("/v1/node/info", headers={"origin": APP})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == APP
    exposed = set(r.headers["access-control-expose-headers"].split(", "))
    ours = {name for name in r.headers if name.startswith("x-peerllm-")}
    assert ours and ours <= exposed == set(EXPOSE_HEADERS)


def test_clients_that_are_not_browsers_are_unaffected(node: tuple[Daemon, httpx.Client]
                                                      ) -> None:
    d, http = node
    assert http.get("/v1/node/info").status_code == 200
    # curl -d sends application/x-www-form-urlencoded; it is read as JSON, as before.
    r = http.post("/v1/models/load", content=b'{"model": "nope"}',
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert d.peers_json()["self"]["node"]["name"] == "guarded"  # the CLI, too


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_without_host_is_http_1_0_and_accepted(node: tuple[Daemon, httpx.Client]
                                                         ) -> None:
    d, _ = node
    old = raw_request(d.api_port, b"GET /v1/node/status HTTP/1.0\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in old
    # Without Host, an Origin is still checked.
    evil = raw_request(d.api_port, b"GET /v1/node/status HTTP/1.0\r\nOrigin: " + EVIL.encode()
                       + b"\r\n\r\n")
    assert evil.startswith(b"HTTP/1.1 403")
    # HTTP/1.1 needs a Host: h11 answers 400 before the guard sees the request.
    assert raw_request(d.api_port, b"GET /v1/node/status HTTP/1.1\r\nConnection: close"
                       b"\r\n\r\n").startswith(b"HTTP/1.1 400")
