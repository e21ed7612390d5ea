"""In-memory byte streams and a fake network of peers for protocol tests without libp2p."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from ..errors import PeerConnectionLost, PeerUnavailable
from ..p2p.streams import (
    MAX_READ,
    STREAM_ERRORS,
    ByteStream,
    StreamHandler,
    map_exceptions,
    safe_handler,
)

logger = logging.getLogger(__name__)


@dataclass
class _Link:
    """What the two ends of one pair share: whether either side reset it."""

    reset: bool = False


class MemoryByteStream:
    """One end of an in-memory stream pair; a ``ByteStream`` like ``p2p.Libp2pStream``.

    Built on ``trio.testing.memory_stream_pair`` (unbounded buffers, two concurrent
    senders raise ``trio.BusyResourceError``), with libp2p's reset added: after either
    end calls ``reset()``, the other end's reads and writes raise PeerConnectionLost.
    """

    def __init__(self, inner: trio.StapledStream[trio.testing.MemorySendStream,
                                                 trio.testing.MemoryReceiveStream],
                 *, peer_id: str, link: _Link) -> None:
        self._inner = inner
        self._peer_id = peer_id
        self._link = link

    @property
    def peer_id(self) -> str:
        return self._peer_id

    async def receive_some(self, max_bytes: int = MAX_READ) -> bytes:
        with map_exceptions(STREAM_ERRORS, peer_id=self._peer_id, what="read"):
            data = bytes(await self._inner.receive_some(max_bytes))
        if not data and self._link.reset:
            raise PeerConnectionLost(self._peer_id, "read failed: the stream was reset")
        return data

    async def send_all(self, data: bytes) -> None:
        if self._link.reset:
            raise PeerConnectionLost(self._peer_id, "write failed: the stream was reset")
        with map_exceptions(STREAM_ERRORS, peer_id=self._peer_id, what="write"):
            await self._inner.send_all(data)

    async def aclose(self) -> None:
        # Memory streams close at once and never fail; shielded like the real adapter.
        with trio.CancelScope(shield=True):
            await self._inner.aclose()

    async def reset(self) -> None:
        self._link.reset = True
        await self.aclose()


def memory_peer_pair(*, client: str = "client", server: str = "server"
                     ) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected ByteStreams: (the end ``client`` holds, the end ``server`` holds).

    Each end's ``peer_id`` names the other side, as a libp2p stream's does.
    """
    left, right = trio.testing.memory_stream_pair()
    link = _Link()
    return (MemoryByteStream(left, peer_id=server, link=link),
            MemoryByteStream(right, peer_id=client, link=link))


class MemoryNetwork:
    """Peers in one trio run, reached through memory streams instead of libp2p hosts.

    ``serve(peer, protocol, handler)`` registers a handler the way ``P2PHost.set_handler``
    does (wrapped in the same ``safe_handler``, so a failing handler resets its stream
    and the "server" stays up); ``opener(peer)`` is a ``StreamOpener`` that dials from
    ``peer``: every ``open_stream`` runs the target's handler on a fresh pair, in the
    network's nursery. Open one with ``open_memory_network()``.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._handlers: dict[tuple[str, str], StreamHandler] = {}
        self.opened: list[tuple[str, str, str]] = []
        """(from peer, to peer, protocol) of every stream opened, in order."""

    def serve(self, peer_id: str, protocol: str, handler: StreamHandler, *,
              timeout_s: float | None = None) -> None:
        self._handlers[peer_id, protocol] = safe_handler(protocol, handler, timeout_s=timeout_s)

    def opener(self, peer_id: str) -> MemoryOpener:
        return MemoryOpener(self, peer_id)

    async def connect(self, from_peer: str, to_peer: str, protocol: str) -> ByteStream:
        handler = self._handlers.get((to_peer, protocol))
        if handler is None:
            raise PeerUnavailable(to_peer, f"cannot open {protocol}: no handler")
        self.opened.append((from_peer, to_peer, protocol))
        ours, theirs = memory_peer_pair(client=from_peer, server=to_peer)
        self._nursery.start_soon(handler, theirs)
        await trio.lowlevel.checkpoint()
        return ours


class MemoryOpener:
    """The ``StreamOpener`` of one peer in a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork, peer_id: str) -> None:
        self._network = network
        self.peer_id = peer_id

    async def open_stream(self, peer_id: str, protocol: str) -> ByteStream:
        return await self._network.connect(self.peer_id, peer_id, protocol)


@asynccontextmanager
async def open_memory_network() -> AsyncIterator[MemoryNetwork]:
    """A MemoryNetwork whose handlers are cancelled when the block exits."""
    async with trio.open_nursery() as nursery:
        yield MemoryNetwork(nursery)
        nursery.cancel_scope.cancel()
