"""Per-peer rate limits on the libp2p side: a token bucket per remote peer, and a count
of the refusals (shown in ``/v1/node/info``).

The bucket logic is ``scheduling.ratelimit`` (pure); this adapter feeds it trio's clock,
so the limits run on a test's MockClock.
"""

from __future__ import annotations

from typing import Final

import trio

from ..scheduling.ratelimit import RateLimiter

MIN_TRACKED_PEERS: Final = 64


class PeerRate:
    """At most ``per_s`` events per second per peer, in bursts of up to ``per_s`` (and at
    least one).

    ``max_peers`` bounds the memory: buckets are kept for up to 4x that many peers (a
    peer idle for a second is forgotten first; see RateLimiter).
    """

    def __init__(self, per_s: float, *, max_peers: int) -> None:
        self._limiter = RateLimiter(per_s, burst=max(1.0, per_s),
                                    max_keys=max(MIN_TRACKED_PEERS, 4 * max_peers))
        self.refused = 0

    @property
    def per_s(self) -> float:
        return self._limiter.rate_per_s

    def check(self, peer_id: str) -> float | None:
        """None if ``peer_id`` may go ahead now (counted), else the seconds until it may."""
        wait = self._limiter.try_acquire(peer_id, trio.current_time())
        if wait is not None:
            self.refused += 1
        return wait
