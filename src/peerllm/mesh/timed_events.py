"""An attempt's event stream as the placement reads it: local events up to Done, and a
remote stream that fails when the peer goes silent (first-token and stall limits)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import trio

from ..errors import PeerTimeout
from ..events import Done
from ..scheduling.timeouts import smoothed_gap, stall_limit
from .routed import Event


async def local_events(chunks: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    async for item in chunks:
        yield item
        if isinstance(item, Done):
            return


async def silence_limited(events: AsyncGenerator[Event, None], peer: str, *,
                           first_token_s: float, stall_s: float
                           ) -> AsyncGenerator[Event, None]:
    """The peer's events; a peer silent for ``first_token_s`` before its first frame, or
    for ``stall_limit`` after it, has failed the request (PeerTimeout): a frozen peer
    keeps its TCP connection open, so only silence tells."""
    async with contextlib.aclosing(events) as evs:
        first = True
        gap: float | None = None  # smoothed time between frames
        last = 0.0
        while True:
            limit = first_token_s if first else stall_limit(gap, stall_s)
            with trio.move_on_after(limit) as waited:
                ev = await anext(evs, None)
            if waited.cancelled_caught:
                raise PeerTimeout(peer, f"no {'first token' if first else 'token'} within "
                                  f"{limit:g} s", phase="first_token" if first else "stall")
            if ev is None:
                return
            now = trio.current_time()
            if not first:
                gap = smoothed_gap(gap, now - last)
            first, last = False, now
            yield ev
