"""NodeClient against scripted HTTP answers (httpx.MockTransport): documents, errors, streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from peerllm import NodeApiError, NodeClient, NodeNotRunning

URL = "http://127.0.0.1:7471"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> NodeClient:
    return NodeClient(URL, transport=httpx.MockTransport(handler))


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) \
        + b"data: [DONE]\n\n"


def delta(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


async def collect(texts: AsyncIterator[str], into: list[str]) -> None:
    async for text in texts:
        into.append(text)


class BreaksAfter(httpx.AsyncByteStream):
    """A response body that sends ``first`` and then loses the connection."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        raise httpx.ReadError("connection reset by peer")


async def test_get_returns_the_document_and_passes_params() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"candidates": [], "model": "m"})

    async with client(handler) as c:
        assert await c.route("m") == {"candidates": [], "model": "m"}
    assert seen[0].url.path == "/v1/route" and seen[0].url.params["model"] == "m"


async def test_nobody_answering_is_node_not_running() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client(handler) as c:
        with pytest.raises(NodeNotRunning) as info:
            await c.peers()
    assert info.value.url == URL
    assert str(info.value) == f"no peerllm node at {URL}: ConnectError: connection refused"
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_openai_error_body_fills_the_fields() -> None:
    body = {"error": {"message": "model busy", "type": "server_error", "code": "busy",
                      "param": None}}

    async with client(lambda _: httpx.Response(503, json=body,
                                               headers={"Retry-After": "2"})) as c:
        with pytest.raises(NodeApiError) as info:
            await c.models()
    err = info.value
    assert (err.status, err.message, err.type, err.code, err.param, err.retry_after_s) == (
        503, "model busy", "server_error", "busy", None, 2.0)
    assert str(err) == "HTTP 503: model busy"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error": "model \'x\' not found"}', "model 'x' not found"),   # Ollama's shape
    (b"<html>bad gateway</html>", "<html>bad gateway</html>"),       # not ours at all
    (b"", "Not Found"),                                               # nothing: the reason
])
async def test_other_error_bodies_keep_a_message(body: bytes, message: str) -> None:
    async with client(lambda _: httpx.Response(404, content=body)) as c:
        with pytest.raises(NodeApiError) as info:
            await c.node_info()
    assert (info.value.status, info.value.message, info.value.code) == (404, message, None)


async def test_a_success_that_is_not_json_is_an_api_error() -> None:
    async with client(lambda _: httpx.Response(200, content=b"<html>")) as c:
        with pytest.raises(NodeApiError, match="invalid JSON"):
            await c.get("/v1/node/info")


async def test_chat_streams_text_and_remembers_who_served() -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=sse(delta("Hel"), delta(""), delta("lo")),
                              headers={"X-PeerLLM-Served-By-Name": "gpu-box"})

    async with client(handler) as c:
        texts = [t async for t in c.chat("m", [{"role": "user", "content": "hi"}],
                                          max_tokens=5)]
        assert c.last_served_by == "gpu-box"
    assert texts == ["Hel", "lo"]
    assert sent == [{"model": "m", "messages": [{"role": "user", "content": "hi"}],
                     "stream": True, "max_tokens": 5}]


async def test_an_error_inside_the_stream_is_raised_not_swallowed() -> None:
    error = {"error": {"message": "no node can serve 'm'", "type": "server_error",
                       "code": "unavailable", "param": None}}
    got: list[str] = []

    async with client(lambda _: httpx.Response(200, content=sse(
            {"choices": [{"index": 0, "text": "Once"}]}, error))) as c:
        with pytest.raises(NodeApiError) as info:
            await collect(c.generate("m", "tell me"), got)
    assert got == ["Once"]
    assert (info.value.status, info.value.code) == (200, "unavailable")


async def test_an_answer_broken_off_midway_is_the_daemons_error() -> None:
    first = sse(delta("a")).removesuffix(b"data: [DONE]\n\n")
    async with client(lambda _: httpx.Response(200, stream=BreaksAfter(first))) as c:
        with pytest.raises(NodeApiError, match="broke off: ReadError") as info:
            await collect(c.chat("m", []), [])
    assert isinstance(info.value.__cause__, httpx.ReadError)


async def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment would take loopback requests away from the daemon."""
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://proxy.invalid:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with client(lambda _: httpx.Response(200, json={"peers": []})) as c:
        assert await c.peers() == []
