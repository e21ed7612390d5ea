"""The byte-stream seam of p2p/: the stream interface the protocols use, its libp2p adapter,
the one read loop, and the one place where foreign stream errors become ours.

The protocol handlers and clients (``infer.py``, ``nodeinfo.py``) see only ``ByteStream``
and ``StreamOpener``. ``P2PHost`` provides them over libp2p (``Libp2pStream``) and
``peerllm.testing`` over memory, so the protocols run in tests without hosts. Sans-IO
decoders (``wire.framing.FrameDecoder``, ``wire.infer``'s ``ClientStream`` and
``ServerStream``) are driven by ``receive_event``. trio, libp2p and yamux exceptions stop
in this module (httpcore's ``map_exceptions`` pattern): past it a broken stream is a
``PeerConnectionLost`` that names the peer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final, Protocol, TypeVar

import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IOException
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError
from libp2p.stream_muxer.yamux import yamux as _yamux

from ..errors import PeerConnectionLost, PeerError
from ..wire.framing import NEED_DATA

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_READ: Final = 64 * 1024
"""Most bytes asked of a stream in one read."""
CLOSE_GRACE_S: Final = 1.0
"""How long closing or resetting a stream may take before we give up on it."""


class ByteStream(Protocol):
    """One bidirectional byte stream to one peer (one libp2p stream).

    One task may receive while another sends; two concurrent senders (or receivers) are
    a bug, as with trio streams.

    Error handling: ``receive_some`` and ``send_all`` raise ``PeerConnectionLost``
    (naming ``peer_id``) when the stream or its connection breaks, or was reset by
    either side; nothing foreign leaks through. ``aclose`` and ``reset`` never raise.

    Cancellation: ``aclose`` and ``reset`` finish (within CLOSE_GRACE_S) even in a
    cancelled scope, so they are safe in ``finally:`` blocks.
    """

    @property
    def peer_id(self) -> str:
        """The peer at the other end."""
        ...

    async def receive_some(self, max_bytes: int = MAX_READ) -> bytes:
        """Up to ``max_bytes`` bytes (at least one), or ``b""`` once the peer closed."""
        ...

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``."""
        ...

    async def aclose(self) -> None:
        """Close gracefully: the peer reads what was sent, then end of stream."""
        ...

    async def reset(self) -> None:
        """Abort both directions: the peer's reads and writes fail from now on."""
        ...


class StreamOpener(Protocol):
    """Opens streams to peers; ``P2PHost`` is one (``peerllm.testing`` has a fake)."""

    async def open_stream(self, peer_id: str, protocol: str) -> ByteStream:
        """A new stream to ``peer_id`` speaking ``protocol``, connecting first if needed.

        Raises:
            PeerError subclasses: no connection or no stream within the dial timeout.
        """
        ...


StreamHandler = Callable[[ByteStream], Awaitable[None]]
"""Serves one inbound stream of a protocol."""

ErrorMap = Mapping[type[Exception], Callable[[str, str], PeerError]]
"""Foreign exception class -> our exception, built from (peer_id, message)."""

STREAM_ERRORS: Final[ErrorMap] = {
    # py-libp2p's StreamReset/StreamClosed/StreamError and the raw connection's errors.
    IOException: PeerConnectionLost,
    # yamux errors that escape NetStream's own translation.
    MuxedStreamError: PeerConnectionLost,
    MuxedConnError: PeerConnectionLost,
    # trio streams (and the in-memory test streams): the peer (Broken) or our side
    # (Closed) ended the stream under us.
    trio.BrokenResourceError: PeerConnectionLost,
    trio.ClosedResourceError: PeerConnectionLost,
    ConnectionError: PeerConnectionLost,
}
"""How a stream operation's failures reach protocol code."""


@contextmanager
def map_exceptions(mapping: ErrorMap, *, peer_id: str, what: str) -> Iterator[None]:
    """Re-raise the foreign exceptions listed in ``mapping`` as ours, chained.

    The first matching entry wins; exceptions not listed pass through untouched.
    """
    try:
        yield
    except tuple(mapping) as exc:
        for foreign, ours in mapping.items():
            if isinstance(exc, foreign):
                raise ours(peer_id, f"{what} failed: {exc!r}") from exc
        raise


async def receive_event(stream: ByteStream, feed: Callable[[bytes], None],
                        next_event: Callable[[], _T | type[NEED_DATA]]) -> _T:
    """Read ``stream`` into a sans-IO decoder until it has something other than NEED_DATA.

    ``feed`` takes the bytes read (``b""`` at end of stream) and ``next_event`` returns
    the decoder's next event: ``receive_event(s, proto.receive_data, proto.next_event)``
    or ``receive_event(s, decoder.feed, decoder.next_frame)``. What the decoder says at
    end of stream (``CLOSED`` or an error) is returned or raised as the decoder decides.

    Raises:
        PeerConnectionLost: the stream broke.
        RemoteProtocolError: from the decoder.

    Cancellation: safe; bytes already fed stay in the decoder.
    """
    while True:
        event = next_event()
        if event is not NEED_DATA:
            return event
        feed(await stream.receive_some(MAX_READ))


class Libp2pStream:
    """``ByteStream`` over a py-libp2p ``INetStream``.

    Smooths py-libp2p's edges: ``read`` raises at end of stream instead of returning
    ``b""``, and its stream, yamux and connection errors become PeerConnectionLost.
    """

    def __init__(self, raw: INetStream, *, peer_id: str | None = None) -> None:
        self.raw = raw
        self._peer_id = peer_id if peer_id is not None else _stream_peer(raw)

    @property
    def peer_id(self) -> str:
        return self._peer_id

    async def receive_some(self, max_bytes: int = MAX_READ) -> bytes:
        with map_exceptions(STREAM_ERRORS, peer_id=self._peer_id, what="read"):
            try:
                return bytes(await self.raw.read(max_bytes))
            except EOFError:  # StreamEOF / MuxedStreamEOF: the peer closed its side
                return b""

    async def send_all(self, data: bytes) -> None:
        with map_exceptions(STREAM_ERRORS, peer_id=self._peer_id, what="write"):
            await self.raw.write(data)

    async def aclose(self) -> None:
        await _best_effort(self.raw.close, self._peer_id, "close")

    async def reset(self) -> None:
        await _best_effort(self.raw.reset, self._peer_id, "reset")


async def _best_effort(op: Callable[[], Awaitable[None]], peer_id: str, what: str) -> None:
    with trio.move_on_after(CLOSE_GRACE_S, shield=True):
        try:
            await op()
        except Exception:  # already reset or gone: libp2p raises assorted errors here
            logger.debug("%s of a stream to %s raised", what, peer_id, exc_info=True)


def _stream_peer(raw: INetStream) -> str:
    try:
        return str(raw.muxed_conn.peer_id)
    except AttributeError:  # a stream whose connection is already torn down
        return "?"


def safe_handler(protocol: str, fn: StreamHandler, *, timeout_s: float | None) -> StreamHandler:
    """Wrap a stream handler so nothing it raises can take the host down.

    py-libp2p propagates a handler's exception into the swarm service and the whole
    host exits (notes §4.6). Here a failure is logged and the stream reset, which tells
    the peer; cancellation still propagates, also when it arrives together with a
    failure (a nursery then raises both in one group).
    """

    @functools.wraps(fn)
    async def wrapper(stream: ByteStream) -> None:
        try:
            if timeout_s is None:
                await fn(stream)
            else:
                with trio.fail_after(timeout_s):
                    await fn(stream)
        except* Exception as group:  # any handler bug or peer fault ends this stream only
            exc = _first_leaf(group)
            logger.info("%s handler for %s ended with %s: %s", protocol, stream.peer_id,
                        type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            await stream.reset()

    return wrapper


def _first_leaf(group: BaseExceptionGroup[Exception]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


async def quietly(step: Callable[[], Awaitable[object]], what: str) -> None:
    """Close or reset something that may already be gone: at most 1 s, shielded (it
    runs while a scope is being cancelled too), any error logged at DEBUG as ``what``."""
    with trio.move_on_after(1, shield=True):
        try:
            await step()
        except Exception:  # already closed or reset by the other side
            logger.debug("%s raised", what, exc_info=True)


def _credit_in_halves() -> bool:
    return False


def release_credit_in_halves() -> None:
    """Make py-libp2p's yamux return receive credit once half the window is read, not
    after every read.

    py-libp2p 0.8.1 sends a WINDOW_UPDATE after each ``read`` by default (its
    ``PY_YAMUX_RELEASE_ON_READ``, read from the environment on every call): a token
    frame then costs the reader an encrypted write and the writer a wake-up of its event
    loop to read the update back, about a third of a served token's CPU here. go-yamux
    and the yamux spec release credit when half the window is consumed, which py-libp2p
    also does with the setting off (its ``_grow_threshold`` path); the window stays the
    same, so a slow reader still stalls the writer exactly as before. We replace the
    module's switch (``_yamux_release_on_read``) by one that says off; idempotent.
    Depends on 0.8.1 internals: tests/unit/p2p/test_streams.py checks the switch still
    exists and is consulted.
    """
    _yamux._yamux_release_on_read = _credit_in_halves
