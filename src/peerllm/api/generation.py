"""Running one generation for an HTTP request: placement errors, streaming, disconnects.

Shared by the OpenAI and Ollama routes, which differ only in how they render (a
:class:`Renderer`). The generation is opened, and its first event awaited, *before* any
response byte is sent, so everything that fails during placement or before the first
token (no route, busy, bad request) still becomes a proper 4xx/5xx JSON error. Once the
stream has started, a failure becomes an in-band error event.

The generation runs inside the ASGI call of :class:`GenerationResponse`, in a task of
its own (the router's cancel scopes and nurseries are entered and left in that one
task); a client disconnect cancels it (the router's context exits). The response's own
task only writes: hypercorn's trio worker writes to the socket inside a *shielded*
cancel scope (``hypercorn/trio/tcp_server.py`` ``protocol_send``), so an ASGI ``send`` to
a client that stopped reading blocks beyond the reach of any cancellation, model slot
and all, for as long as the client keeps the connection open. The generation therefore
hands its messages to the writer over a small channel; when the writer has not taken one
for ``api.stall_timeout_s``, the generation is dropped (its model slot goes to the next
request at once) and, when the write returns, the response ends without its last
chunk: hypercorn closes the connection.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..error_codes import http_status, rejection
from ..errors import (
    AuthError,
    InferenceError,
    InferenceRejected,
    LocalProtocolError,
    NoRoute,
    PeerError,
    PeerLLMError,
    ProtocolError,
)
from ..events import Done, TokenChunk
from ..inference.versions import SHOWN_HEX
from ..mesh.routed import Routed
from ..wire.blob.manifest import digest_hex
from .auditing import client_of, inference_line
from .schemas import MAX_BODY_BYTES, ApiError, Generation, Json, parse_body

if TYPE_CHECKING:
    from ..auth import Principal
    from ..node import Node

logger = logging.getLogger(__name__)

SESSION_HEADER: Final = "x-peerllm-session"
WRITE_AHEAD: Final = 8
"""ASGI messages a generation may get ahead of the socket writer: enough to ride out a
slow write, few enough that a client that stopped reading is noticed within one stall
timeout of the kernel's socket buffers filling up."""

def api_error(exc: PeerLLMError) -> ApiError:
    """The HTTP answer to an error raised while placing or running a request."""
    if isinstance(exc, AuthError):
        return ApiError(exc.status, exc.message, code=exc.reason,
                        retry_after_s=exc.retry_after_s)
    if isinstance(exc, NoRoute):
        model = exc.model
        if not exc.known:
            return ApiError(404, f"model {model!r} is not served by any node in the mesh"
                            f"{served_versions(model, exc.versions)}",
                            param="model", code="model_not_found")
        reasons = "; ".join(f"{k}: {v}" for k, v in exc.reasons.items()) or "no node is ready"
        return ApiError(503, f"no node can serve {model!r} right now ({reasons})",
                        code="no_route", retry_after_s=exc.retry_after_s or 1.0)
    if isinstance(exc, InferenceError):
        exc = rejection(exc)
    if isinstance(exc, InferenceRejected):
        status = http_status(exc.code, retryable=exc.retryable)
        retry = exc.retry_after_s if exc.retry_after_s is not None else 1.0
        return ApiError(status, exc.message, param="model" if status == 404 else None,
                        code=exc.code, retry_after_s=retry if status in (429, 503) else None)
    if isinstance(exc, LocalProtocolError):  # ours: the request cannot be sent to a peer
        return ApiError(400, str(exc), code="bad_request")
    if isinstance(exc, PeerError | ProtocolError):
        return ApiError(502, f"the serving peer failed: {exc}", code="peer_error")
    # A PeerLLMError we have no answer for is a bug of ours: the details go to the log,
    # never to the client (they may name files, peers or internals).
    logger.error("no HTTP answer for %s: %s", type(exc).__name__, exc, exc_info=exc)
    return ApiError(500, "internal error (the node's log has the details)", code="internal")


def served_versions(model: str, versions: dict[str, str | None]) -> str:
    """The tail of the 404 for a pinned id that nodes serve at other versions only:
    "; <id> is at <hex> (<node>), ..." (empty when there are none)."""
    if not versions:
        return ""
    model_id = model.partition("@")[0]
    shown = ", ".join(f"{digest_hex(d)[:SHOWN_HEX] if d else 'a version not hashed yet'}"
                      f" ({node})" for node, d in versions.items())
    return f"; {model_id} is at {shown}"


def single_error(exc: BaseException) -> PeerLLMError | None:
    """The one PeerLLMError inside ``exc`` (nurseries wrap errors in groups), else None."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, PeerLLMError) else None


def _to_api_error(exc: PeerLLMError | BaseExceptionGroup[Any]) -> ApiError:
    one = single_error(exc)
    if one is None:
        raise exc
    return api_error(one)


def retry_after(err: ApiError) -> dict[str, str]:
    if err.retry_after_s is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(err.retry_after_s)))}


async def read_json(request: Request, *, optional: bool = False) -> Json:
    """The request body as a JSON object, read with a size cap (413 past it).

    With ``optional``, an empty body reads as ``{}``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes",
                       code="request_too_large")
    body = bytearray()
    try:
        # aclosing: leaving early (413) closes starlette's stream here, not in the GC
        async with aclosing(request.stream()) as parts:
            async for part in parts:
                body += part
                if len(body) > MAX_BODY_BYTES:
                    raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} "
                                        "bytes", code="request_too_large")
    except ClientDisconnect:
        # Routine (a client gave up, a flood of them closed): one quiet line, no
        # traceback. The answer is never sent; it only ends the handler cleanly.
        logger.debug("HTTP client %s disconnected before sending the whole body",
                     _address(request.scope.get("client")))
        raise ApiError(400, "the client disconnected before sending the whole body",
                       code="client_disconnected") from None
    if optional and not body.strip():
        return {}
    return parse_body(bytes(body))


def served_by_headers(routed: Routed) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-peerllm-served-by", routed.served_by.encode("ascii", "replace")),
               (b"x-peerllm-served-by-name", routed.served_by_name.encode("ascii", "replace"))]
    if routed.score is not None:
        headers.append((b"x-peerllm-score", f"{routed.score:.4f}".encode()))
    return headers


class Renderer(Protocol):
    """How one API flavour writes a generation (stream or whole) and its errors."""

    stream_media_type: str

    def head(self, routed: Routed) -> bytes: ...  # right after the headers (stream)

    def chunk(self, routed: Routed, text: str) -> bytes: ...

    def tail(self, routed: Routed, done: Done) -> bytes: ...  # ends the stream

    def stream_error(self, err: ApiError) -> bytes: ...  # in-band, ends the stream

    def whole(self, routed: Routed, text: str, done: Done) -> bytes: ...  # JSON body

    def error(self, err: ApiError) -> Response: ...


class GenerationResponse(Response):
    """An ASGI response that places and runs one generation while it answers."""

    def __init__(self, node: Node, gen: Generation, renderer: Renderer, *,
                 principal: Principal) -> None:
        super().__init__()
        self._node = node
        self._gen = gen
        self._renderer = renderer
        self._principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        to_writer, messages = trio.open_memory_channel[Message](WRITE_AHEAD)
        handoff = _Handoff(to_writer, self._node.config.api.stall_timeout_s,
                           client=scope.get("client"))
        run = _Run(self._node, self._gen, self._renderer, handoff.send, self._principal)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                nursery.start_soon(self._generate, run, handoff, scope, receive)
                async with messages:
                    async for message in messages:
                        await send(message)  # may block past cancellation: see module doc
                        if handoff.stalled:
                            break  # no more of a dropped response: hypercorn closes it
                nursery.cancel_scope.cancel()
        finally:  # one audit line per request, however it ended
            inference_line(self._node.audit, model=run.gen.request.model, routed=run.routed,
                           done=run.done, err=run.err, started=run.t0, client=client_of(scope),
                           subject=self._principal.subject)

    @staticmethod
    async def _generate(run: _Run, handoff: _Handoff, scope: Scope, receive: Receive) -> None:
        with handoff.scope:
            async with handoff.channel:
                await run.run(scope, receive)


class _Handoff:
    """The generation's ``send``: a message to the writer, or a drop once it stalls."""

    def __init__(self, channel: trio.MemorySendChannel[Message], stall_s: float, *,
                 client: object) -> None:
        self.channel = channel
        self.scope = trio.CancelScope()  # around the generation; cancelled on a stall
        self.stalled = False
        self._stall_s = stall_s
        self._client = client

    async def send(self, message: Message) -> None:
        try:
            # The writer has room (the usual case): no cancel scope, and no schedule
            # point, which would cost a pass of the event loop per token.
            self.channel.send_nowait(message)
            return
        except trio.WouldBlock:
            pass
        with trio.move_on_after(self._stall_s):
            await self.channel.send(message)
            return
        self.stalled = True
        logger.warning("HTTP client %s has not read the response for %g s "
                       "(api.stall_timeout_s): dropping it, its generation stops",
                       _address(self._client), self._stall_s)
        self.scope.cancel()
        await trio.lowlevel.checkpoint()  # raises Cancelled: the generation unwinds


def _address(client: object) -> str:
    if isinstance(client, tuple | list) and len(client) == 2:
        return f"{client[0]}:{client[1]}"
    return "(unknown)"


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class _Run:
    """The state of one generation response (kept off the Response for clarity)."""

    def __init__(self, node: Node, gen: Generation, renderer: Renderer, send: Send,
                 principal: Principal) -> None:
        self.node = node
        self.principal = principal
        self.gen = gen
        self.r = renderer
        self.send = send
        self.started = False  # response headers sent
        self.t0 = trio.current_time()
        self.ttft_s: float | None = None
        self.parts: list[str] = []
        self.done: Done | None = None
        self.routed: Routed | None = None
        self.err: ApiError | None = None  # what the client was told, if it failed

    async def run(self, scope: Scope, receive: Receive) -> None:
        model = self.gen.request.model
        err: ApiError | None = None
        try:
            async with self.node.open_generation(self.gen.request, session=self.gen.session,
                                                 principal=self.principal) as routed:
                self.routed = routed
                # Errors while streaming are caught in here, so the router's context exits
                # normally rather than seeing them (and trying another candidate).
                try:
                    await self._pump(routed)
                except (PeerLLMError, BaseExceptionGroup) as exc:
                    err = _to_api_error(exc)
        except (PeerLLMError, BaseExceptionGroup) as exc:
            err = _to_api_error(exc)
        if err is None and self.done is None:
            err = ApiError(504, "the generation ended before finishing (deadline passed)",
                           code="timeout")
        self.err = err
        if err is not None:
            self.node.metrics.observe_error(model, err.status)
            if self.started:
                await self._body(self.r.stream_error(err), more=False)
            else:
                await self.r.error(err)(scope, receive, self.send)
            return
        assert self.routed is not None and self.done is not None  # set on the success path
        routed, done = self.routed, self.done
        self.node.authority.charge(self.principal, done.prompt_tokens + done.completion_tokens,
                                   now=time.time())
        self.node.metrics.observe_subject(self.principal.subject, tokens_in=done.prompt_tokens,
                                          tokens_out=done.completion_tokens)
        self.node.metrics.observe_request(
            model, "local" if routed.local else "remote", ttft_s=self.ttft_s,
            total_s=trio.current_time() - self.t0, tokens=done.completion_tokens)
        if self.gen.stream:
            await self._start(routed)
            await self._body(self.r.tail(routed, done), more=False)
        else:
            body = self.r.whole(routed, "".join(self.parts), done)
            await self.send({"type": "http.response.start", "status": 200,
                             "headers": [(b"content-type", b"application/json"),
                                         (b"content-length", str(len(body)).encode()),
                                         *served_by_headers(routed)]})
            await self._body(body, more=False)

    async def _pump(self, routed: Routed) -> None:
        events = routed.events()
        try:
            async for ev in events:
                if isinstance(ev, TokenChunk):
                    if self.ttft_s is None:
                        self.ttft_s = trio.current_time() - self.t0
                    if self.gen.stream:
                        await self._start(routed)
                        await self._body(self.r.chunk(routed, ev.text))
                    else:
                        self.parts.append(ev.text)
                else:
                    self.done = ev
                    return
        finally:
            # We stop at Done without asking for more: finalise the generator here, in
            # this task, not in the garbage collector.
            if isinstance(events, AsyncGenerator):
                await events.aclose()

    async def _start(self, routed: Routed) -> None:
        if self.started:
            return
        self.started = True
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": [(b"content-type", self.r.stream_media_type.encode()),
                                     (b"cache-control", b"no-cache"),
                                     (b"x-accel-buffering", b"no"),
                                     *served_by_headers(routed)]})
        head = self.r.head(routed)
        if head:
            await self._body(head)

    async def _body(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Handler, on_error: Callable[[ApiError], Response]) -> Handler:
    """Wrap a route so ApiError (bad input) and PeerLLMError become ``on_error`` responses."""

    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as err:
            return on_error(err)
        except PeerLLMError as exc:
            return on_error(api_error(exc))

    return handler
