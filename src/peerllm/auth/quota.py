"""Per-token rate limits: requests per minute and tokens per minute, as token buckets.

Each limited token id has a bucket per kind holding at most one minute's allowance and
refilling continuously. A request takes one request unit before it runs; generated and
prompt tokens are charged after it ends (they are unknown before), so a bucket may go
negative and the next request waits until it is positive again. The clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .jws import refuse
from .reasons import Reason

MAX_KEYS: Final = 10_000


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


class _Buckets:
    def __init__(self) -> None:
        self._b: dict[str, _Bucket] = {}

    def level(self, key: str, per_min: int, now: float) -> _Bucket:
        b = self._b.get(key)
        if b is None:
            if len(self._b) >= MAX_KEYS:  # forget the least recently used
                self._b.pop(next(iter(self._b)))
            b = self._b[key] = _Bucket(float(per_min), now)
        else:
            self._b[key] = self._b.pop(key)  # most recently used last
            b.level = min(float(per_min), b.level + (now - b.at) * per_min / 60.0)
            b.at = max(b.at, now)
        return b


class QuotaBook:
    """The live buckets of every rate-limited token seen by this node."""

    def __init__(self) -> None:
        self._requests = _Buckets()
        self._tokens = _Buckets()

    def admit(self, key: str, *, requests_per_min: int | None, tokens_per_min: int | None,
              now: float) -> None:
        """Take one request from ``key``'s allowance.

        Raises:
            AuthError(rate_limited | tokens_limited): over a rate; ``retry_after_s`` is
                when the bucket allows the next request.
        """
        if tokens_per_min is not None:
            t = self._tokens.level(key, tokens_per_min, now)
            if t.level < 1.0:
                wait = (1.0 - t.level) * 60.0 / tokens_per_min
                raise refuse(Reason.TOKENS_LIMITED, f"over {tokens_per_min} tokens per "
                             "minute", retry_after_s=wait)
        if requests_per_min is not None:
            r = self._requests.level(key, requests_per_min, now)
            if r.level < 1.0:
                wait = (1.0 - r.level) * 60.0 / requests_per_min
                raise refuse(Reason.RATE_LIMITED, f"over {requests_per_min} requests per "
                             "minute", retry_after_s=wait)
            r.level -= 1.0

    def charge_tokens(self, key: str, tokens: int, *, tokens_per_min: int | None,
                      now: float) -> None:
        """Debit ``tokens`` (prompt + completion) after a request ran."""
        if tokens_per_min is not None and tokens > 0:
            self._tokens.level(key, tokens_per_min, now).level -= tokens
