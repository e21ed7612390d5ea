"""What one HTTP request may hold: how long its body may take, and how many run at once.

hypercorn's trio worker has neither: its ``read_timeout`` is per read (1 byte every 5 s
never trips it, and a long stream whose client sends nothing would), and it accepts
every connection. So both are enforced here, as ASGI middleware in front of the app:

- the body deadline wraps ``receive``: the last body message must arrive within
  ``api.body_timeout_s`` of the request's start, else ``receive`` raises a 408 ApiError
  that the route's error handler answers in its API's shape (the connection is closed,
  the body being unread); once the body is in, ``receive`` is the server's own again
  (a streaming response waits on it for the disconnect);
- past ``api.max_open_requests`` requests being read or answered, a request is refused
  503 with Retry-After before anything reads its body;
- a response that starts before its request's body was read to the end (413, 408, 503,
  or any early refusal) says ``Connection: close``: the server closes the connection
  anyway, and a client told so does not try to reuse it (httpx would, and fail).

Idle connections (and slow headers) are hypercorn's: closed after its keep-alive timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .schemas import ApiError

if TYPE_CHECKING:
    from .access import ErrorRenderer


class RequestLimits:
    """ASGI middleware: a body deadline for every request and a cap on open requests."""

    def __init__(self, app: ASGIApp, *, body_timeout_s: float, max_open: int,
                 render: Callable[[str], ErrorRenderer]) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.max_open = max_open
        self.open = 0  # requests inside the app now (one trio loop: no lock needed)
        self._render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = BodyDeadline(receive, trio.current_time() + self.body_timeout_s,
                            self.body_timeout_s, expected=_has_body(scope))

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and body.unread:
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        if self.open >= self.max_open:
            err = ApiError(503, f"this node is answering {self.max_open} HTTP requests "
                                "already (api.max_open_requests); retry shortly",
                           code="overloaded", retry_after_s=1.0)
            await self._render(scope["path"])(err)(scope, receive, send_closing)
            return
        self.open += 1
        try:
            await self.app(scope, body, send_closing)
        finally:
            self.open -= 1


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class BodyDeadline:
    """``receive`` with a deadline on the request body (see the module doc)."""

    def __init__(self, receive: Receive, deadline: float, timeout_s: float, *,
                 expected: bool) -> None:
        self._receive = receive
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._body_done = False
        self._expected = expected  # the request announced a body

    @property
    def unread(self) -> bool:
        """The request announced a body and it has not been read to its end."""
        return self._expected and not self._body_done

    async def __call__(self) -> Message:
        if self._body_done:
            return await self._receive()
        with trio.move_on_at(self._deadline) as scope:
            message = await self._receive()
        if scope.cancelled_caught:
            raise ApiError(408, f"the request body did not arrive within {self._timeout_s:g} "
                                "s (api.body_timeout_s)", code="body_timeout")
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_done = True
        return message
