"""Browser-borne requests: foreign ``Origin``s and ``Host`` names are refused; the origins
in ``api.cors_origins`` get proper CORS.

Two attacks need nothing but a browser on a machine that reaches the node, and they aim
at the loopback API, where auth is usually off; the guard runs whether or not it is on:

* **Cross-site requests.** Any web page can POST to ``http://127.0.0.1:7471`` as a
  "simple" request (``text/plain`` or a form) with no preflight: the browser sends it,
  only hides the answer. Our handlers read the body as JSON whatever its type, so such a
  POST loads and unloads models and runs chats. A browser marks every cross-origin
  request (and every POST) with ``Origin``; non-browser clients (curl, the openai and
  ollama SDKs, our CLI) send none.
* **DNS rebinding.** A page on ``http://evil.example:7471`` re-points its name at
  127.0.0.1; its requests are then same-origin, so the browser lets it read the answers,
  but they carry ``Host: evil.example:7471``.

Rules, applied before anything else (the guard is the outermost middleware, so a refused
request reaches no route and learns nothing, not even the node id):

* ``Host``: accepted when its host part is an IP address literal, ``localhost``, the name
  in ``api.host``, a name in ``api.allowed_hosts``, or anything if that list holds
  ``*``. An IP literal is always safe: rebinding needs a *name* the attacker controls,
  and a request for ``Host: 192.0.2.7`` reached us because that address leads here —
  which is also how binding to ``0.0.0.0``/``::`` keeps working for every address of
  the machine (and through Docker's or a NAT's port mapping). The port is not compared:
  what a rebinding attacker controls is the name, while the port a browser puts in
  ``Host`` differs from the bound one behind ``ssh -L``, ``docker -p`` or a proxy. A
  request with no ``Host`` (HTTP/1.0; h11 itself refuses HTTP/1.1 without one) is
  accepted: browsers always send ``Host``. Two ``Host`` headers are refused.
* ``Origin``: no header passes. Present, it must be one of ``api.cors_origins``
  (compared in canonical form, see ``config.origins``), or the list holds ``*``, which
  only an operator who writes it gets; anything else (``null`` included: sandboxed
  frames and ``file://`` pages send it) is refused, on every method and path.
* Refusals are 403 in the API's own error shape: Ollama's ``{"error": "..."}`` under
  ``/api/``, the OpenAI error object everywhere else; the message names the origin or
  host and the setting that would allow it.
* CORS for an allowed origin: a preflight (``OPTIONS`` with
  ``Access-Control-Request-Method``) is answered here with 204, the exact origin (never
  ``*``: with ``Vary: Origin`` caches keep answers apart), the methods, the headers
  (``Authorization``, ``Content-Type``, ``X-PeerLLM-Session``, plus any the page asks
  for — the origin is trusted, and the OpenAI JS SDK sends ``x-stainless-*`` headers no
  list here could know) and ``Max-Age``; Chrome's Private Network Access preflight is
  answered too, so a public https page the operator listed may call a loopback node.
  Other responses to an allowed origin carry ``Access-Control-Allow-Origin`` and expose
  the ``X-PeerLLM-*`` and ``Retry-After`` headers. No ``Allow-Credentials``: the API
  uses no cookies, and a page sends ``Authorization`` without credentials mode.

Content type: **not** enforced. Requiring ``application/json`` on POST would stop
simple cross-site requests too, but the ``Origin`` rule already does, and it would break
``curl -d '{...}'`` (which sends ``application/x-www-form-urlencoded``), as in our own
README and many scripts; the official openai and ollama clients send
``application/json`` either way. Browsers older than the ``Origin``-on-POST rule
(Firefox before 70, 2019) are not defended against.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ApiConfig
from ..config.origins import (
    ANY,
    canonical_host,
    canonical_origin,
    is_ip_literal,
    split_host_port,
)
from . import ollama, openai
from .generation import SESSION_HEADER
from .schemas import ApiError

logger = logging.getLogger(__name__)

ALLOW_METHODS: Final = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS: Final = ("authorization", "content-type", SESSION_HEADER)
EXPOSE_HEADERS: Final = ("x-peerllm-node-id", "x-peerllm-node-name", "x-peerllm-served-by",
                         "x-peerllm-served-by-name", "x-peerllm-score", "retry-after")
"""Every response header of ours a page may read (``Content-Type`` is always readable)."""
PREFLIGHT_MAX_AGE_S: Final = 600
LOOPBACK_NAME: Final = "localhost"  # browsers resolve it themselves, never through DNS
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 token
_SHOWN_CHARS: Final = 100  # an attacker's header is quoted in the error, but not all of it


@dataclass(frozen=True)
class BrowserPolicy:
    """The Origin and Host rules of the module docstring, as pure decisions."""

    cors_origins: frozenset[str]  # canonical origins, or {"*"}
    allowed_hosts: frozenset[str]  # canonical host names, or {"*"}
    bind_host: str  # api.host, canonical

    @classmethod
    def from_config(cls, api: ApiConfig) -> BrowserPolicy:
        try:
            bind = canonical_host(api.host)
        except ValueError:  # binding to it fails anyway, with the OS's reason
            bind = api.host.lower()
        return cls(frozenset(api.cors_origins), frozenset(api.allowed_hosts), bind)

    def host_refusal(self, values: list[str]) -> str | None:
        """Why a request with these ``Host`` header values is refused, or None."""
        if not values:
            return None
        if len(values) > 1:
            return "a request has one Host header, this one has several"
        try:
            host, _port = split_host_port(values[0].strip())
        except ValueError:
            return f"Host {_shown(values[0])} is not a host name or address"
        if (ANY in self.allowed_hosts or is_ip_literal(host) or host == LOOPBACK_NAME
                or host == self.bind_host or host in self.allowed_hosts):
            return None
        return (f"host {host!r} is not allowed; add it to api.allowed_hosts if this node "
                "is meant to answer to that name (IP addresses and localhost always work)")

    def origin_refusal(self, values: list[str]) -> str | None:
        """Why a request with these ``Origin`` header values is refused, or None."""
        if not values:
            return None
        if len(values) > 1:
            return "a request has one Origin header, this one has several"
        if ANY in self.cors_origins:
            return None
        try:
            origin = canonical_origin(values[0].strip())
        except ValueError:
            origin = values[0]
        if origin in self.cors_origins:
            return None
        return f"origin {_shown(values[0])} is not allowed; add it to api.cors_origins"


class BrowserGuard:
    """ASGI middleware enforcing ``BrowserPolicy`` and answering CORS (module docstring)."""

    def __init__(self, app: ASGIApp, *, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host_problem = self.policy.host_refusal(headers.getlist("host"))
        origin_problem = self.policy.origin_refusal(headers.getlist("origin"))
        if host_problem is not None or origin_problem is not None:
            code = "host_not_allowed" if host_problem is not None else "origin_not_allowed"
            await _refuse(scope, receive, send, host_problem or origin_problem or "", code)
            return
        origin = headers.get("origin")
        if origin is None or scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(origin, headers)(scope, receive, send)
        else:
            await self.app(scope, receive, _with_cors(send, origin))


def _preflight(origin: str, headers: Headers) -> Response:
    asked = [name.strip().lower()
             for name in headers.get("access-control-request-headers", "").split(",")]
    allowed = dict.fromkeys([*ALLOW_HEADERS, *(n for n in asked if _HEADER_NAME.fullmatch(n))])
    answer = {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": ALLOW_METHODS,
        "access-control-allow-headers": ", ".join(allowed),
        "access-control-max-age": str(PREFLIGHT_MAX_AGE_S),
        "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }
    if headers.get("access-control-request-private-network", "").lower() == "true":
        answer["access-control-allow-private-network"] = "true"
    return Response(status_code=204, headers=answer)


def _with_cors(send: Send, origin: str) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = list(message.get("headers", []))
            headers = MutableHeaders(scope=message)
            headers["access-control-allow-origin"] = origin
            headers["access-control-expose-headers"] = ", ".join(EXPOSE_HEADERS)
            headers.add_vary_header("Origin")
        await send(message)

    return send_with_cors


async def _refuse(scope: Scope, receive: Receive, send: Send, message: str, code: str) -> None:
    client = scope.get("client")
    logger.info("refused %s %s from %s: %s", scope.get("method", "websocket"),
                scope.get("path", ""), f"{client[0]}:{client[1]}" if client else "?", message)
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    err = ApiError(403, message, code=code)
    path: str = scope.get("path", "")
    on_ollama = path == "/api" or path.startswith("/api/")
    response = ollama.error_response(err) if on_ollama else openai.error_response(err)
    await response(scope, receive, send)


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")
