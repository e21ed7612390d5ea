"""A small synchronous client for a running daemon's HTTP API (used by the CLI)."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import NodeNotRunning, PeerLLMError


class ApiError(PeerLLMError):
    """The daemon answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NodeClient:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: str) -> Any:
        try:
            resp = self._http.get(path, params=params or None)
        except httpx.TransportError as exc:
            raise NodeNotRunning(self.base_url, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:200]
            raise ApiError(resp.status_code, str(message))
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(resp.status_code, "the node answered with invalid JSON") from exc
