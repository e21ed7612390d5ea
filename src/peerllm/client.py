"""A small async HTTP client for apps that talk to a running `peerllm node` daemon."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .errors import NodeNotRunning, PeerLLMError


class NodeApiError(PeerLLMError):
    """The daemon answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _message(resp: httpx.Response, body: bytes) -> str:
    try:
        err = json.loads(body)["error"]
        return str(err["message"] if isinstance(err, dict) else err)
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


class NodeClient:
    """``async with NodeClient("http://127.0.0.1:7471") as c: async for t in c.chat(...)``.

    Works under trio and asyncio (httpx picks the running loop).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:7471", *, timeout_s: float = 300.0
                 ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s,
                                       trust_env=False)
        self.last_served_by: str | None = None

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, **params: str) -> Any:
        try:
            resp = await self._http.get(path, params=params or None)
        except httpx.TransportError as exc:
            raise NodeNotRunning(self.base_url, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise NodeApiError(resp.status_code, _message(resp, resp.content))
        return resp.json()

    async def node_info(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self.get("/v1/node/info")
        return doc

    async def peers(self) -> list[dict[str, Any]]:
        doc: dict[str, Any] = await self.get("/v1/peers")
        return list(doc["peers"])

    async def models(self) -> list[dict[str, Any]]:
        doc: dict[str, Any] = await self.get("/v1/models")
        return list(doc["data"])

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

    async def _sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._http.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    raise NodeApiError(resp.status_code, _message(resp, await resp.aread()))
                self.last_served_by = resp.headers.get("x-peerllm-served-by-name")
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        return
                    yield json.loads(data)
        except httpx.TransportError as exc:
            raise NodeNotRunning(self.base_url, f"{type(exc).__name__}: {exc}") from exc
