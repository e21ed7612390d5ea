"""Whether this node is publicly reachable: the one place that fact lives.

The AutoNAT-style prober (p2p/reachability.py) writes it; the relay service (serve
while public) and the reservation keeper (reserve while private) read it and wake on
changes. ``p2p.reachability: public|private`` pins it and the prober leaves it alone.
"""

from __future__ import annotations

from enum import StrEnum

import trio


class Reachability(StrEnum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


class ReachabilityState:
    """The current reachability, why we believe it, and a way to wait for a change."""

    def __init__(self, pinned: Reachability | None = None) -> None:
        self.pinned = pinned is not None
        self._status = pinned or Reachability.UNKNOWN
        self.reason = "set in the config (p2p.reachability)" if pinned else "not checked yet"
        self._changed = trio.Event()

    @property
    def status(self) -> Reachability:
        return self._status

    def set(self, status: Reachability, reason: str) -> None:
        """Record a prober's verdict (ignored when the config pins the status)."""
        if self.pinned:
            return
        self.reason = reason
        if status is not self._status:
            self._status = status
            self._changed.set()
            self._changed = trio.Event()

    async def wait_changed(self, seen: Reachability) -> Reachability:
        """Return the status as soon as it is not ``seen`` (at once if it already is not)."""
        while self._status is seen:
            await self._changed.wait()
        return self._status
