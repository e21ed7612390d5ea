"""The browser guard: foreign Origins and Host names get a 403 in the API's shape before any
route runs; allowed origins get CORS. Driven over ASGI in front of a small Starlette app
with the API's paths, whose handlers record every request that reached them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Scope

from peerllm.api.origin import EXPOSE_HEADERS, BrowserGuard, BrowserPolicy
from peerllm.config import ApiConfig

BASE = "http://127.0.0.1:7471"
EVIL = "http://evil.example"
APP_ORIGIN = "http://localhost:3000"


class Backend:
    """The routes behind the guard; ``reached`` lists every request that got through."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def handle(self, request: Request) -> Response:
        self.reached.append(f"{request.method} {request.url.path}")
        return JSONResponse({"ok": True}, headers={"x-peerllm-node-id": "n-1"})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route(path, self.handle, methods=methods) for path, methods in (
                ("/v1/models/load", ["POST"]), ("/api/chat", ["POST"]),
                ("/v1/node/info", ["GET"]), ("/metrics", ["GET"]))])


def guard(backend: Backend, **api: Any) -> BrowserGuard:
    return BrowserGuard(backend.app(), policy=BrowserPolicy.from_config(ApiConfig(**api)))


@asynccontextmanager
async def client(backend: Backend, **api: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=guard(backend, **api))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


def text_plain(origin: str) -> dict[str, str]:
    """What a cross-site <form enctype=text/plain> or no-cors fetch sends: no preflight."""
    return {"origin": origin, "content-type": "text/plain"}


# -- Origin ---------------------------------------------------------------------------------

async def test_requests_without_origin_pass() -> None:
    backend = Backend()
    async with client(backend) as http:
        r = await http.post("/v1/models/load", json={"model": "m"})
        form = await http.post("/api/chat", content=b'{"model": "m"}',
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert (r.status_code, form.status_code) == (200, 200)  # curl -d sends a form type
    assert "access-control-allow-origin" not in r.headers
    assert backend.reached == ["POST /v1/models/load", "POST /api/chat"]


async def test_a_cross_site_post_is_refused_in_the_openai_shape() -> None:
    backend = Backend()
    async with client(backend) as http:
        r = await http.post("/v1/models/load", content=b'{"model": "m"}',
                            headers=text_plain(EVIL))
    assert r.status_code == 403
    assert r.json() == {"error": {
        "message": "origin 'http://evil.example' is not allowed; add it to api.cors_origins",
        "type": "invalid_request_error", "param": None, "code": "origin_not_allowed"}}
    assert "access-control-allow-origin" not in r.headers
    assert backend.reached == []


async def test_a_cross_site_post_to_ollama_is_refused_in_the_ollama_shape() -> None:
    backend = Backend()
    async with client(backend) as http:
        r = await http.post("/api/chat", content=b'{"model": "m"}', headers=text_plain(EVIL))
    assert r.status_code == 403
    assert r.json() == {
        "error": "origin 'http://evil.example' is not allowed; add it to api.cors_origins"}
    assert backend.reached == []


@pytest.mark.parametrize("origin", [
    "null", "http://localhost:3001", "https://localhost:3000", "http://localhost:3000.evil",
    "http://127.0.0.1:7471"])
async def test_only_the_listed_origins_pass(origin: str) -> None:
    backend = Backend()
    async with client(backend, cors_origins=(APP_ORIGIN,)) as http:
        r = await http.get("/v1/node/info", headers={"origin": origin})
    assert r.status_code == 403, origin
    assert backend.reached == []


async def test_a_get_from_a_foreign_page_is_refused_too() -> None:
    backend = Backend()
    async with client(backend) as http:
        r = await http.get("/metrics", headers={"origin": EVIL})
    assert r.status_code == 403
    assert backend.reached == []


async def test_an_allowed_origin_gets_cors_headers() -> None:
    backend = Backend()
    async with client(backend, cors_origins=("HTTP://LOCALHOST:3000/",)) as http:
        r = await http.post("/v1/models/load", json={"model": "m"},
                            headers={"origin": APP_ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    assert exposed == set(EXPOSE_HEADERS)
    assert "Origin" in r.headers["vary"]
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers["x-peerllm-node-id"] == "n-1"  # the route's own headers are kept


async def test_star_allows_any_origin_but_echoes_it() -> None:
    backend = Backend()
    async with client(backend, cors_origins=("*",)) as http:
        r = await http.get("/v1/node/info", headers={"origin": EVIL})
        null = await http.get("/v1/node/info", headers={"origin": "null"})
    assert (r.status_code, null.status_code) == (200, 200)
    assert r.headers["access-control-allow-origin"] == EVIL


async def test_two_origin_headers_are_refused() -> None:
    backend = Backend()
    async with client(backend, cors_origins=(APP_ORIGIN,)) as http:
        r = await http.get("/v1/node/info",
                           headers=[("origin", APP_ORIGIN), ("origin", APP_ORIGIN)])
    assert r.status_code == 403
    assert "several" in r.json()["error"]["message"]


# -- preflight ------------------------------------------------------------------------------

def preflight(origin: str, **extra: str) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": "POST", **extra}


async def test_a_preflight_from_an_allowed_origin_is_answered_here() -> None:
    backend = Backend()
    async with client(backend, cors_origins=(APP_ORIGIN,)) as http:
        r = await http.options("/v1/models/load", headers=preflight(
            APP_ORIGIN, **{"access-control-request-headers": "Authorization, X-Stainless-OS"}))
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    assert set(r.headers["access-control-allow-methods"].split(", ")) == {
        "GET", "POST", "DELETE", "OPTIONS"}
    allowed = set(r.headers["access-control-allow-headers"].split(", "))
    assert allowed >= {"authorization", "content-type", "x-peerllm-session", "x-stainless-os"}
    assert int(r.headers["access-control-max-age"]) > 0
    assert "Origin" in r.headers["vary"]
    assert "access-control-allow-private-network" not in r.headers
    assert backend.reached == []  # a preflight never runs a route


async def test_a_private_network_preflight_is_allowed_for_an_allowed_origin() -> None:
    async with client(Backend(), cors_origins=("https://app.example",)) as http:
        r = await http.options("/v1/chat/completions", headers=preflight(
            "https://app.example", **{"access-control-request-private-network": "true"}))
    assert r.status_code == 204
    assert r.headers["access-control-allow-private-network"] == "true"


async def test_a_preflight_from_a_foreign_origin_is_refused() -> None:
    async with client(Backend(), cors_origins=(APP_ORIGIN,)) as http:
        r = await http.options("/api/chat", headers=preflight(EVIL))
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    assert "api.cors_origins" in r.json()["error"]


async def test_a_plain_options_request_reaches_the_app() -> None:
    backend = Backend()
    async with client(backend, cors_origins=(APP_ORIGIN,)) as http:
        r = await http.options("/v1/node/info", headers={"origin": APP_ORIGIN})
    assert r.status_code == 405  # not a preflight: the router answers, with CORS headers
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN


# -- Host -----------------------------------------------------------------------------------

async def test_a_rebinding_host_is_refused_naming_the_host_and_the_setting() -> None:
    backend = Backend()
    async with client(backend) as http:
        r = await http.get("/v1/node/info", headers={"host": "evil.example:7471"})
        o = await http.post("/api/chat", json={}, headers={"host": "evil.example:7471"})
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "host_not_allowed"
    assert "host 'evil.example' is not allowed; add it to api.allowed_hosts" in err["message"]
    assert o.status_code == 403 and "api.allowed_hosts" in o.json()["error"]
    assert backend.reached == []


async def test_a_rebinding_page_is_refused_even_from_its_own_origin() -> None:
    # After rebinding the page is same-origin with "us": Origin and Host both name it.
    backend = Backend()
    async with client(backend, cors_origins=("*",)) as http:
        r = await http.get("/v1/node/info", headers={"host": "evil.example:7471",
                                                      "origin": "http://evil.example:7471"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "host_not_allowed"


def policy(**api: Any) -> BrowserPolicy:
    return BrowserPolicy.from_config(ApiConfig(**api))


@pytest.mark.parametrize(("host", "api"), [
    ("127.0.0.1:7471", {}), ("localhost:7471", {}), ("LOCALHOST", {}), ("[::1]:7471", {}),
    ("127.0.0.1:9999", {}),                       # ssh -L / docker -p: the port may differ
    ("192.0.2.7:7471", {"host": "0.0.0.0"}),      # wildcard bind: any address of ours
    ("[2001:db8::7]:7471", {"host": "::"}),
    ("192.0.2.7:7471", {}),                       # an IP literal cannot be rebound
    ("node-1.lan:7471", {"host": "node-1.lan"}),  # bound by name
    ("node-1.lan.", {"allowed_hosts": ("node-1.lan",)}),
    ("anything.example", {"allowed_hosts": ("*",)}),
])
def test_accepted_hosts(host: str, api: dict[str, Any]) -> None:
    assert policy(**api).host_refusal([host]) is None


@pytest.mark.parametrize(("host", "api"), [
    ("evil.example:7471", {}), ("evil.example", {"host": "0.0.0.0"}),
    ("localhost.evil.example", {}), ("node-1.lan", {"allowed_hosts": ("node-2.lan",)}),
    ("127.0.0.1.nip.io", {}), ("", {}), ("[::1", {}), ("a b", {}),
])
def test_refused_hosts(host: str, api: dict[str, Any]) -> None:
    assert policy(**api).host_refusal([host]) is not None


def test_host_header_count() -> None:
    assert policy().host_refusal([]) is None  # HTTP/1.0: browsers always send Host
    refusal = policy().host_refusal(["127.0.0.1", "evil.example"])
    assert refusal is not None and "several" in refusal


def test_a_long_header_is_not_quoted_whole() -> None:
    refusal = policy().origin_refusal(["http://" + "a" * 5000])
    assert refusal is not None and len(refusal) < 200


# -- other ASGI scopes ----------------------------------------------------------------------

async def run_websocket(headers: list[tuple[bytes, bytes]]) -> tuple[list[Message], list[str]]:
    reached: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    scope: Scope = {"type": "websocket", "path": "/ws", "headers": headers,
                    "client": ("127.0.0.1", 5000)}
    await BrowserGuard(app, policy=policy())(scope, receive, send)
    return sent, reached


async def test_a_foreign_websocket_handshake_is_closed_unaccepted() -> None:
    sent, reached = await run_websocket([(b"host", b"127.0.0.1:7471"), (b"origin", EVIL.encode())])
    assert reached == []
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008
    sent, reached = await run_websocket([(b"host", b"127.0.0.1:7471")])
    assert (sent, reached) == ([], ["websocket"])


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        pass

    await BrowserGuard(app, policy=policy())({"type": "lifespan"}, nothing, ignore)
    assert seen == ["lifespan"]
