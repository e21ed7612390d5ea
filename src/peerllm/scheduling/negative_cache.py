"""A bounded LRU of keys recently looked up and not found, each forgotten after a TTL (pure).

Membership asks the DHT for the providers of a model nobody it knows serves; a client
sending a stream of made-up model ids would otherwise cost one DHT lookup per request.
With this cache a miss costs one lookup per id per TTL, and at most ``max_entries`` ids
are remembered (the oldest go first), so hostile ids cannot grow memory either.
``now`` is always a parameter: the caller's clock (trio.current_time).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

NEGATIVE_TTL_S: Final = 30.0
MAX_NEGATIVE_ENTRIES: Final = 1024


class NegativeCache:
    """Keys known to be missing, each until ``now`` passes its expiry."""

    def __init__(self, *, ttl_s: float = NEGATIVE_TTL_S,
                 max_entries: int = MAX_NEGATIVE_ENTRIES) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("NegativeCache needs a positive ttl_s and max_entries")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()  # oldest insertion first

    def __len__(self) -> int:
        return len(self._expiry)

    def missing(self, key: str, now: float) -> bool:
        """Whether ``key`` was found missing less than a TTL ago (expired ones are dropped)."""
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if now >= expiry:
            del self._expiry[key]
            return False
        return True

    def note_missing(self, key: str, now: float) -> None:
        """``key`` was just looked up and not found."""
        self._expiry.pop(key, None)
        self._expiry[key] = now + self.ttl_s
        while len(self._expiry) > self.max_entries:
            self._expiry.popitem(last=False)

    def found(self, key: str) -> None:
        """``key`` exists now (e.g. a peer's node-info lists it): forget it was missing."""
        self._expiry.pop(key, None)
