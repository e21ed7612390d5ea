"""The HTTP client for a running `peerllm node` daemon, used by apps and by the CLI alike."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from .errors import NodeApiError, NodeNotRunning

DEFAULT_URL = "http://127.0.0.1:7471"


class NodeClient:
    """``async with NodeClient("http://127.0.0.1:7471") as client: ...``

    Works under trio and asyncio (httpx picks the running loop); the CLI runs it with
    ``trio.run``. Proxy settings in the environment are ignored (``trust_env=False``): the
    daemon is normally on loopback, where an ``HTTP_PROXY`` would only get in the way.

    Args:
        base_url: the daemon's API, as printed in its banner.
        timeout_s: how long one connect, read or write may take (not the whole request, so
            a long generation is fine as long as tokens keep coming).
        token: an access token for a node that requires auth (sent as a bearer token).
        transport: an httpx transport to use instead of the network (tests pass
            ``httpx.MockTransport``).

    Error handling (every method):
        NodeNotRunning: nothing answered at ``base_url`` (refused, unreachable, or no
            response within ``timeout_s``).
        NodeApiError: the daemon answered with an error status, reported an error inside a
            stream, sent something that is not JSON, or broke the answer off midway.
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout_s: float = 300.0,
                 token: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s,
                                       trust_env=False, transport=transport, headers=headers)
        self.last_served_by: str | None = None  # who served the last chat/generate

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, **params: str) -> Any:
        """``GET path?params`` and return the decoded JSON document."""
        async with self._request("GET", path, params=params or None) as resp:
            body = await resp.aread()
        try:
            return json.loads(body)
        except ValueError as exc:
            raise NodeApiError(resp.status_code, "the node answered with invalid JSON") from exc

    async def node_info(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self.get("/v1/node/info")
        return doc

    async def peers(self) -> list[dict[str, Any]]:
        doc: dict[str, Any] = await self.get("/v1/peers")
        return list(doc["peers"])

    async def models(self) -> list[dict[str, Any]]:
        doc: dict[str, Any] = await self.get("/v1/models")
        return list(doc["data"])

    async def usage(self, by: str = "subject") -> dict[str, Any]:
        """The node's usage totals by ``subject``, ``peer`` or ``model`` (``GET /v1/usage``):
        ``{"by", "rows": [...], "total": {...}, "node": {...}}``."""
        doc: dict[str, Any] = await self.get("/v1/usage", by=by)
        return doc

    async def route(self, model: str) -> dict[str, Any]:
        """Where a request for ``model`` would run, and why (``peerllm route``)."""
        doc: dict[str, Any] = await self.get("/v1/route", model=model)
        return doc

    async def set_replicas(self, model: str, replicas: int) -> dict[str, Any]:
        """Ask the mesh to keep ``replicas`` copies of ``model``, a model this node serves
        (``peerllm replicate``; 0: no target). Returns ``{"model", "replicas", "digest",
        "holders"}``: the digest is None until the node has computed it, the holders are
        the live ones this node sees."""
        path = f"/v1/models/{quote(model, safe='/:@')}/replicas"
        async with self._request("POST", path, body={"replicas": replicas}) as resp:
            raw = await resp.aread()
        doc = _json_or_none(raw)
        if not isinstance(doc, dict):
            raise NodeApiError(resp.status_code, "the node answered with invalid JSON")
        return doc

    async def chat(self, model: str, messages: list[dict[str, str]], **params: Any
                   ) -> AsyncIterator[str]:
        """Stream the answer's text through the mesh (OpenAI chat completions, SSE)."""
        body = {"model": model, "messages": messages, "stream": True, **params}
        async for chunk in self._sse("/v1/chat/completions", body):
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    async def generate(self, model: str, prompt: str, **params: Any) -> AsyncIterator[str]:
        """Stream a plain completion's text through the mesh (OpenAI completions, SSE)."""
        body = {"model": model, "prompt": prompt, "stream": True, **params}
        async for chunk in self._sse("/v1/completions", body):
            for choice in chunk.get("choices", []):
                if choice.get("text"):
                    yield choice["text"]

    async def pull(self, ref: str, *, digest: str | None = None
                   ) -> AsyncIterator[dict[str, Any]]:
        """Pull a model into the daemon (``POST /v1/models/pull``) and stream its progress
        documents (``status``, ``state``, ``total``, ``completed``, ``rate_bps``,
        ``eta_s``, ``sources``...), the last with ``status`` "success".

        The pull runs in the daemon: leaving early (Ctrl-C) leaves it running, and a
        second call joins it (or resumes its partial file).
        """
        body: dict[str, Any] = {"model": ref}
        if digest is not None:
            body["digest"] = digest
        async for event in self._sse("/v1/models/pull", body):
            yield event

    async def transfers(self) -> list[dict[str, Any]]:
        """Downloads in flight and recently finished (``GET /v1/transfers``)."""
        doc: dict[str, Any] = await self.get("/v1/transfers")
        return list(doc["transfers"])

    async def delete(self, model: str, *, cancel: bool = False) -> None:
        """Stop serving ``model`` here and delete its file if it was pulled (a file given
        with --model stays on disk). ``cancel``: stop its running requests rather than
        wait for them."""
        body: dict[str, Any] = {"model": model, "cancel": cancel}
        async with self._request("DELETE", "/api/delete", body=body) as resp:
            await resp.aread()

    @asynccontextmanager
    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> AsyncIterator[httpx.Response]:
        """The response once its status is known to be a success (its body still unread).

        A transport failure before the status line means nobody answered; after it, the
        daemon did answer and then broke off, which is the daemon's error, not absence.
        """
        request = self._http.build_request(method, path, params=params, json=body)
        try:
            resp = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise NodeNotRunning(self.base_url, _describe(exc)) from exc
        try:
            if resp.status_code >= 400:
                raw = await resp.aread()
                raise _api_error(resp.status_code, _json_or_none(raw),
                                 fallback=raw[:300].decode("utf-8", "replace").strip()
                                 or resp.reason_phrase,
                                 retry_after_s=_retry_after(resp))
            yield resp
        except httpx.TransportError as exc:
            raise NodeApiError(resp.status_code,
                               f"the answer broke off: {_describe(exc)}") from exc
        finally:
            await resp.aclose()

    async def _sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        failed: NodeApiError | None = None
        done = False
        async with self._request("POST", path, body=body) as resp:
            self.last_served_by = resp.headers.get("x-peerllm-served-by-name")
            # Read on to the end of the body even after [DONE] or an error: leaving
            # httpx's nested line iterators half-consumed makes trio warn when they are
            # collected (the server closes the stream right after [DONE] anyway).
            async for line in resp.aiter_lines():
                if done or failed or not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    done = True
                    continue
                event = _json_or_none(data.encode())
                if not isinstance(event, dict):
                    failed = NodeApiError(resp.status_code,
                                          f"invalid stream event {data[:100]!r}")
                elif "error" in event:  # the stream had started (200) when this went wrong
                    failed = _api_error(resp.status_code, event, fallback="error in stream")
                else:
                    yield event
        if failed is not None:
            raise failed


def _api_error(status: int, doc: object, *, fallback: str,
               retry_after_s: float | None = None) -> NodeApiError:
    """The error an API body describes: OpenAI ``{"error": {"message", "type", "code",
    "param"}}``, Ollama ``{"error": "message"}``, or anything else (``fallback``)."""
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        return NodeApiError(status, str(err.get("message") or fallback),
                            code=_opt_str(err.get("code")), type=_opt_str(err.get("type")),
                            param=_opt_str(err.get("param")), retry_after_s=retry_after_s)
    return NodeApiError(status, err if isinstance(err, str) and err else fallback,
                        retry_after_s=retry_after_s)


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _retry_after(resp: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is not used by peerllm and is ignored."""
    try:
        seconds = float(resp.headers["retry-after"])
    except (KeyError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
