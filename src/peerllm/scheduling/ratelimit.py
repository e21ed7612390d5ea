"""Keyed token buckets: how often each peer (or user, or token) may do something.

Pure: the caller passes ``now`` (``trio.current_time()`` in the node), so the buckets run
on a test's MockClock and in plain sync tests alike.

Each key has a bucket that holds at most ``burst`` tokens and refills at ``rate_per_s``;
a key seen for the first time starts full. ``try_acquire`` takes ``cost`` tokens if the
bucket has them and otherwise says how long until it will (a ``Retry-After``);
``charge`` debits after the fact (e.g. the tokens a generation really produced) and may
leave a bucket in debt, which later acquires wait out.

Memory is bounded by ``max_keys``. A full bucket is indistinguishable from a key never
seen, so dropping it loses nothing; only when every tracked bucket is below full is the
least recently used one dropped, which forgives its debt. Pick ``max_keys`` above the
number of keys in use at once (e.g. the peer registry's ``max_peers``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

_EPSILON: Final = 1e-9
"""Float slack: a bucket that refilled for exactly the advertised wait has the tokens."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float  # the latest ``now`` seen for this key (never moves backwards)


class RateLimiter:
    """Token buckets keyed by anything hashable (peer ids, subjects, token ids).

    Args:
        rate_per_s: tokens added to each bucket per second (> 0).
        burst: bucket size: what a key may spend at once after being idle (> 0).
        max_keys: most buckets kept at once (>= 1).

    Raises:
        ValueError: a parameter is out of range (the message names it).
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        if not (math.isfinite(burst) and burst > 0):
            raise ValueError(f"burst must be a finite number > 0, got {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()  # LRU first

    def __len__(self) -> int:
        """How many keys are tracked (a full bucket may have been dropped already)."""
        return len(self._buckets)

    def try_acquire(self, key: Hashable, now: float, cost: float = 1) -> float | None:
        """Take ``cost`` tokens from ``key``'s bucket if it has them.

        Returns:
            None if allowed (the tokens are taken); otherwise the seconds until the
            bucket will hold ``cost`` tokens (nothing is taken), > 0.

        Raises:
            ValueError: ``cost`` is negative or above ``burst`` (it could never be
                acquired; debit such costs with ``charge``).
        """
        if not (math.isfinite(cost) and 0 <= cost <= self.burst):
            raise ValueError(f"cost must be from 0 to burst ({self.burst:g}), got {cost!r}")
        bucket = self._refilled(key, now)
        if bucket.tokens + _EPSILON * max(1.0, cost) >= cost:
            bucket.tokens -= cost
            return None
        return (cost - bucket.tokens) / self.rate_per_s

    def charge(self, key: Hashable, now: float, cost: float) -> None:
        """Debit ``cost`` tokens from ``key``'s bucket unconditionally (it may go negative).

        Raises:
            ValueError: ``cost`` is negative or not finite.
        """
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
        self._refilled(key, now).tokens -= cost

    def available(self, key: Hashable, now: float) -> float:
        """The tokens ``key`` could spend at ``now`` (negative while in debt); no change."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst
        return self._level(bucket, now)

    # -- internals ---------------------------------------------------------------------

    def _level(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.stamp)  # a clock that went back refills nothing
        return min(self.burst, bucket.tokens + elapsed * self.rate_per_s)

    def _refilled(self, key: Hashable, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = _Bucket(tokens=self.burst, stamp=now)
            return bucket
        bucket.tokens = self._level(bucket, now)
        bucket.stamp = max(bucket.stamp, now)
        self._buckets.move_to_end(key)
        return bucket

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_keys:
            return
        full = [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst]
        for k in full:
            del self._buckets[k]
        if not full:
            self._buckets.popitem(last=False)  # every bucket is in use: forgive the LRU one
