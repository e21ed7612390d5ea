"""A model's generation slots, shared by this node's own users and its peers.

Replaces a FIFO ``trio.CapacityLimiter``: a node that lets peers use its model must not
make its owner wait behind them. A request comes from one of two origins:

* ``"local"`` — placed by our own router on our own engine (HTTP API, library);
* ``"peer"`` — forwarded to us over /peerllm/infer (``mesh.serving``).

Rules, applied whenever a slot frees or a request arrives:

1. A free slot goes to the longest-waiting local request, if any;
2. else to the longest-waiting peer request, if peers hold fewer than ``peer_limit``
   slots (the owner's reserved share, ``inference.peer_share``).

A generation already running is never interrupted: with one slot, a local request waits
for at most the one generation in progress.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import trio

Origin = Literal["local", "peer"]
"""Who placed a request on our engine: our own router ("local") or a peer ("peer")."""


@dataclass(frozen=True, kw_only=True)
class SlotStatistics:
    """A snapshot of a SlotLimiter (trio's ``statistics()`` convention)."""

    total: int
    peer_limit: int
    held_local: int
    held_peer: int
    waiting_local: int
    waiting_peer: int


@dataclass(eq=False)
class _Waiter:
    origin: Origin
    granted: trio.Event = field(default_factory=trio.Event)


class SlotLimiter:
    """``total`` slots; local requests first, at most ``peer_limit`` held by peers.

    Raises:
        ValueError: ``total`` < 1, or ``peer_limit`` not in 1..total.
    """

    def __init__(self, total: int, *, peer_limit: int | None = None) -> None:
        limit = total if peer_limit is None else peer_limit
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        if not 1 <= limit <= total:
            raise ValueError(f"peer_limit must be from 1 to total ({total}), got {limit}")
        self._total = total
        self._peer_limit = limit
        self._held: dict[Origin, int] = {"local": 0, "peer": 0}
        self._waiting: dict[Origin, deque[_Waiter]] = {"local": deque(), "peer": deque()}

    def resize(self, total: int, *, peer_limit: int | None = None) -> None:
        """Now ``total`` slots (a load resolved ``parallel: auto``). Holders beyond a
        smaller total keep their slot; nobody new is granted one until they fit.

        Raises:
            ValueError: as the constructor.
        """
        limit = total if peer_limit is None else peer_limit
        if total < 1 or not 1 <= limit <= total:
            raise ValueError(f"need total >= 1 and 1 <= peer_limit <= total, got {total}, "
                             f"{limit}")
        self._total, self._peer_limit = total, limit
        self._grant_waiters()

    def overcommitted(self, origin: Origin) -> bool:
        """True while more slots are held than a ``resize`` left (for ``origin``: more
        than the total, or peers beyond their limit): a holder granted one before the
        resize should hand it back and queue again."""
        held = self._held["local"] + self._held["peer"]
        return held > self._total or (origin == "peer" and self._held["peer"] > self._peer_limit)

    def statistics(self) -> SlotStatistics:
        return SlotStatistics(total=self._total, peer_limit=self._peer_limit,
                              held_local=self._held["local"], held_peer=self._held["peer"],
                              waiting_local=len(self._waiting["local"]),
                              waiting_peer=len(self._waiting["peer"]))

    @asynccontextmanager
    async def hold(self, origin: Origin) -> AsyncIterator[None]:
        """Wait for a slot (see the module rules) and hold it for the block.

        Cancellation: a waiting request leaves the queue at once; one granted a slot at
        the moment it was cancelled hands the slot on.
        """
        await self._acquire(origin)
        try:
            yield
        finally:
            self._release(origin)

    async def _acquire(self, origin: Origin) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._grantable(origin) and not self._waiting[origin] \
                and not (origin == "peer" and self._waiting["local"]):
            self._held[origin] += 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(origin)
        self._waiting[origin].append(waiter)
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():
                self._release(origin)  # granted as we were cancelled: pass the slot on
            else:
                self._waiting[origin].remove(waiter)
            raise

    def _grantable(self, origin: Origin) -> bool:
        free = self._total - self._held["local"] - self._held["peer"]
        return free > 0 and (origin == "local" or self._held["peer"] < self._peer_limit)

    def _release(self, origin: Origin) -> None:
        self._held[origin] -= 1
        self._grant_waiters()

    def _grant_waiters(self) -> None:
        # Invariant after this loop: a local request waits only when no slot is free, a
        # peer request only when no slot is free or peers hold peer_limit.
        while True:
            for candidate in ("local", "peer"):
                queue = self._waiting[candidate]
                if queue and self._grantable(candidate):
                    waiter = queue.popleft()
                    self._held[candidate] += 1
                    waiter.granted.set()
                    break
            else:
                return
