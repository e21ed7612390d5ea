"""One placed generation as its caller holds it: who serves it, and its event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from ..errors import PeerLLMError
from ..events import Done, TokenChunk

Event = TokenChunk | Done
Item = TokenChunk | Done | PeerLLMError  # what the router's pump sends the caller


@dataclass
class Routed:
    """One placed generation: who serves it and its stream of chunks (then Done).

    ``served_by`` changes if the stream broke mid-way and resumed on another replica;
    ``resumed`` counts how often that happened.
    """

    served_by: str = ""
    served_by_name: str = ""
    score: float | None = None  # the serving node's MCDA score when it was chosen
    model: str = ""
    local: bool = False
    resumed: int = 0
    attempts: list[str] = field(default_factory=list)
    _recv: trio.MemoryReceiveChannel[Item] | None = None

    def events(self) -> AsyncIterator[Event]:
        """The chunks, then one Done. A failure after the first chunk that no replica could
        take over is raised here (NoRoute)."""
        if self._recv is None:
            raise RuntimeError("generation already consumed")
        recv, self._recv = self._recv, None
        return _Events(recv)


class _Events:
    """Iterator over the pump's channel (a class, not an async generator, so a caller
    that stops early leaves nothing to finalise)."""

    def __init__(self, recv: trio.MemoryReceiveChannel[Item]) -> None:
        self._recv = recv
        self._done = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(item, PeerLLMError):
            self._done = True
            raise item
        if isinstance(item, Done):
            self._done = True
        return item
