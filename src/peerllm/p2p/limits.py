"""Per-peer limits on the libp2p side: a token bucket per remote peer (``PeerRate``), and
the concurrency-plus-rate gate every request/answer server puts in front of its
handler (``PeerStreams``); both count their refusals (shown in ``/v1/node/info``).

The bucket logic is ``scheduling.ratelimit`` (pure); this adapter feeds it trio's clock,
so the limits run on a test's MockClock.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import trio

from ..scheduling.ratelimit import RateLimiter
from ..security_events import PeerLimit, PeerLimitHook
from ..wire.limits import MAX_DEADLINE_MS

MIN_TRACKED_PEERS: Final = 64
TOO_MANY_STREAMS_RETRY_MS: Final = 200


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


@dataclass(frozen=True, kw_only=True)
class StreamStatistics:
    """What a server's streams are doing and what it refused (for ``/v1/node/info``)."""

    active_streams: int
    peers: int  # peers with at least one stream being served
    refused_too_many_streams: int
    refused_stream_rate: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a peer's new stream is not served now: an error frame's code, message and
    ``retry_after_ms`` (always retryable: a busy server, not a broken one)."""

    code: str
    message: str
    retry_after_ms: int


class PeerStreams:
    """At most ``max_per_peer`` of one protocol's streams served at once per peer
    (``too_many_streams``) and, with ``rate``, that many new ones per second (``busy``).

    ``what`` names the streams in refusal messages ("infer", "embed"); ``on_limited`` is
    told of each refusal (metrics and audit, wired by node.py).
    """

    def __init__(self, *, what: str, max_per_peer: int, rate: PeerRate | None = None,
                 on_limited: PeerLimitHook | None = None) -> None:
        if max_per_peer < 1:
            raise ValueError(f"max_streams_per_peer must be >= 1, got {max_per_peer}")
        self._what = what
        self._max = max_per_peer
        self._rate = rate
        self._on_limited = on_limited
        self._active: dict[str, int] = {}
        self._refused_streams = 0

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            active_streams=sum(self._active.values()), peers=len(self._active),
            refused_too_many_streams=self._refused_streams,
            refused_stream_rate=self._rate.refused if self._rate is not None else 0)

    def refusal(self, peer: str) -> Refusal | None:
        """Why ``peer`` may not open another stream now, or None to serve it.

        The concurrency check comes first: a stream refused for it spends no rate token.
        """
        if self._active.get(peer, 0) >= self._max:
            self._refused_streams += 1
            if self._on_limited is not None:
                self._on_limited(peer, PeerLimit.STREAMS)
            return Refusal("too_many_streams",
                           f"at most {self._max} concurrent requests per peer",
                           TOO_MANY_STREAMS_RETRY_MS)
        if self._rate is None:
            return None
        wait = self._rate.check(peer)
        if wait is None:
            return None
        if self._on_limited is not None:
            self._on_limited(peer, PeerLimit.STREAM_RATE)
        retry_ms = min(MAX_DEADLINE_MS, max(1, math.ceil(wait * 1000)))
        return Refusal("busy", f"at most {self._rate.per_s:g} new {self._what} streams per "
                       f"second per peer; retry in {retry_ms} ms", retry_ms)

    @contextmanager
    def serving(self, peer: str) -> Iterator[None]:
        """Count one of ``peer``'s streams as being served for the block."""
        self._active[peer] = self._active.get(peer, 0) + 1
        try:
            yield
        finally:
            left = self._active.get(peer, 1) - 1
            if left <= 0:
                self._active.pop(peer, None)
            else:
                self._active[peer] = left
