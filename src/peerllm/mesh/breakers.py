"""Every peer's circuit breaker, fed by request outcomes, and who it blames.

The transitions are pure (scheduling.breaker); this module keeps one breaker per peer,
remembers which process failed (its boot nonce) so a restarted peer gets trial traffic
at once, and logs openings. Only the peer's own failures count: a request we could not
encode, or a peer that said "busy", never opens a breaker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..p2p.registry import PeerRegistry
from ..scheduling.breaker import (
    Breaker,
    BreakerConfig,
    BreakerState,
    describe,
    on_attempt,
    on_failure,
    on_restart,
    on_success,
    release_trial,
    state_at,
    trip,
)

logger = logging.getLogger(__name__)


class BreakerBook:
    """Per-peer breakers; ``now`` comes from the caller's clock (trio.current_time)."""

    def __init__(self, config: BreakerConfig, registry: PeerRegistry, *, self_peer_id: str,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self._registry = registry
        self._self = self_peer_id
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        # Peers whose breaker opened -> the boot nonce of the process that failed; node-info
        # with another nonce is a new process: trial traffic at once. (A reconnect of the
        # same process waits out the cooldown: a flaky link stays out.)
        self._tripped: dict[str, bytes | None] = {}

    def __contains__(self, peer_id: str) -> bool:
        """Whether any breaker state is kept for ``peer_id``."""
        return peer_id in self._breakers or peer_id in self._tripped

    def get(self, peer_id: str, now: float | None = None) -> Breaker:
        """The peer's breaker; one tripped when the peer died goes half-open as soon as
        node-info shows a new process (another boot nonce) behind that peer ID."""
        now = self._clock() if now is None else now
        breaker = self._breakers.get(peer_id, Breaker())
        if peer_id in self._tripped:
            entry = self._registry.get(peer_id)
            if entry is not None and entry.info is not None \
                    and entry.info.boot_nonce != self._tripped[peer_id]:
                breaker = self._breakers[peer_id] = on_restart(breaker, now, self.config)
                del self._tripped[peer_id]
        return breaker

    def state(self, peer_id: str) -> BreakerState:
        """The peer's breaker state now (closed for a peer never seen failing)."""
        now = self._clock()
        return state_at(self.get(peer_id, now), now, self.config)

    def describe(self, peer_id: str) -> str:
        now = self._clock()
        return describe(self.get(peer_id, now), now, self.config)

    def attempt(self, peer_id: str, now: float) -> None:
        """A request is about to go to ``peer_id`` (takes a half-open trial slot)."""
        if peer_id != self._self:
            self._breakers[peer_id] = on_attempt(self._breakers.get(peer_id, Breaker()), now,
                                                 self.config)

    def release_trial(self, peer_id: str, started: float) -> None:
        """The attempt started at ``started`` was answered or abandoned: free its slot."""
        b = self._breakers.get(peer_id)
        if b is not None:
            self._breakers[peer_id] = release_trial(b, started)

    def peer_down(self, peer_id: str) -> None:
        """The peer is certainly gone (e.g. a dial to it was refused): open its breaker."""
        self.record(peer_id, ok=False, down=True)

    def record(self, peer_id: str, ok: bool, *, down: bool = False) -> None:
        """Feed a request's outcome to the peer's breaker; ``down``: the peer is certainly
        gone (dial refused, connection dropped), which opens it at once."""
        if peer_id == self._self:
            return
        now = self._clock()
        before = self._breakers.get(peer_id, Breaker())
        was_open = state_at(before, now, self.config) is BreakerState.OPEN
        if down:  # (already open: keep its cooldown running)
            b = before if was_open else trip(before, now)
        else:
            b = (on_success if ok else on_failure)(before, now, self.config)
        if not was_open and state_at(b, now, self.config) is BreakerState.OPEN:
            entry = self._registry.get(peer_id)
            self._tripped[peer_id] = entry.info.boot_nonce if entry and entry.info else None
            who = f"{entry.name} ({peer_id})" if entry is not None and entry.name else peer_id
            why = ("its connection is gone" if down else
                   f"{b.consecutive_failures} consecutive failed requests")
            # A peer leaving is routine (INFO); requests failing on a live one is not.
            logger.log(logging.INFO if down else logging.WARNING,
                       "circuit breaker for %s opened: %s; next trial in %.0f s", who, why,
                       self.config.cooldown_s)
        self._breakers[peer_id] = b

    def forget_except(self, keep: Iterable[str]) -> None:
        """Drop the breakers of peers no longer known (bounded memory under churn)."""
        known = set(keep)
        for table in (self._breakers, self._tripped):
            for peer_id in [p for p in table if p not in known]:
                del table[peer_id]
