"""Reach across NATs with circuit relays: while this node is not publicly reachable, hold
reservations on up to two relays and advertise the circuit addresses they give us; and
switch our own relay service on where it makes sense (protocols/relay.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import trio

from ..errors import PeerError
from ..p2p.dht import DHT_OP_TIMEOUT_S, Dht
from ..p2p.host import P2PHost
from ..p2p.reachability_state import Reachability, ReachabilityState
from ..p2p.relay import RELAY_PROVIDER_REF, Relay, Reservation
from ..wire.records import provider_key

logger = logging.getLogger(__name__)

MAX_RELAYS = 2  # reservations held at once (one spare if a relay goes away)
RENEW_AT = 0.75  # a reservation is renewed at this fraction of its lifetime
RETRY_S = 30.0  # looking for (more) relays again after this long
CHECK_S = 5.0  # how often held relays are checked (a lapsed one's addresses are dropped)
RESERVE_TIMEOUT_S = 10.0  # connecting to a relay and reserving, together
ADDRS_PER_RELAY = 4  # circuit addresses we advertise per relay (records hold 32 in all)
PROVIDE_RETRY_S = 60.0  # a relay says so in the DHT until that works once...
PROVIDE_S = 600.0  # ...then again this often
ROUTING_POLL_S = 1.0  # a relay with an empty DHT table looks again this often


@dataclass(slots=True)
class _Held:
    reservation: Reservation
    renew_at: float  # trio time
    addrs: tuple[str, ...]  # our circuit addresses through it


class ReservationKeeper:
    """Holds relay reservations while ``reachability`` is PRIVATE; drops them (and their
    advertised addresses) when it is not, when a relay disconnects or a slot lapses."""

    def __init__(self, *, host: P2PHost, relay: Relay, reachability: ReachabilityState,
                 relays: Sequence[str], bootstrap: Sequence[str], dht: Dht | None,
                 on_change: Callable[[], None], max_relays: int = MAX_RELAYS,
                 retry_s: float = RETRY_S) -> None:
        self._host = host
        self._relay = relay
        self._reach = reachability
        self._configured = tuple(relays)
        self._bootstrap = tuple(bootstrap)
        self._dht = dht
        self._on_change = on_change
        self._max = max_relays
        self._retry_s = retry_s
        self.held: dict[str, _Held] = {}

    def circuit_addrs(self) -> list[str]:
        return [a for h in self.held.values() for a in h.addrs]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        try:
            while True:
                seen = self._reach.status
                if seen is not Reachability.PRIVATE:
                    await self._reach.wait_changed(seen)
                    continue
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._hold)
                    await self._reach.wait_changed(seen)
                    nursery.cancel_scope.cancel()
                self._drop_all(f"this node is {self._reach.status} now")
        finally:
            self._drop_all("the node is stopping")

    async def _hold(self) -> None:
        next_look = trio.current_time()
        while True:
            count = len(self.held)
            self._drop_lapsed()
            if len(self.held) < count:  # look again now (the same relay may be back)
                next_look = trio.current_time()
            for relay, held in list(self.held.items()):
                if trio.current_time() >= held.renew_at:
                    await self._renew(relay)
            if len(self.held) < self._max and trio.current_time() >= next_look:
                await self.look()
                next_look = trio.current_time() + self._retry_s
            wake = [trio.current_time() + CHECK_S, *(h.renew_at for h in self.held.values())]
            if len(self.held) < self._max:
                wake.append(next_look)
            await trio.sleep_until(min(wake))

    async def look(self) -> None:
        """Reserve on the preferred relays we do not hold yet, until we hold enough:
        p2p.relays, then bootstrap peers that serve hop (or have not said), then relays
        found in the DHT."""
        await self._try(self._known_candidates())
        if self._dht is not None and len(self.held) < self._max:
            await self._try(await self._dht.find_providers(RELAY_PROVIDER_REF))

    def _known_candidates(self) -> list[tuple[str, list[str]]]:
        out = [(_peer_of(addr), [addr]) for addr in self._configured]
        for addr in self._bootstrap:
            peer = _peer_of(addr)
            if self._relay.speaks_hop(peer) is not False:
                out.append((peer, [addr]))
        return out

    async def _try(self, candidates: Sequence[tuple[str, list[str]]]) -> None:
        for relay, addrs in candidates:
            if len(self.held) >= self._max:
                return
            if relay not in self.held and relay != self._host.peer_id:
                await self.reserve(relay, addrs)

    async def reserve(self, relay: str, addrs: list[str]) -> bool:
        """Connect to ``relay`` and take (or renew) a slot; False (logged) if refused."""
        try:
            with trio.fail_after(RESERVE_TIMEOUT_S):
                await self._host.connect(relay, addrs)
                rsv = await self._relay.reserve(relay)
        except trio.TooSlowError:
            logger.info("relay %s: no reservation within %s s", relay, RESERVE_TIMEOUT_S)
            return False
        except PeerError as exc:
            logger.info("relay %s: no reservation: %s", relay, exc.message)
            return False
        # A relay listening on a wildcard sends no address: use the one we dialled.
        if not rsv.addrs:
            rsv = replace(rsv, addrs=tuple(a for a in addrs if a.endswith(f"/p2p/{relay}")))
        mine = tuple(rsv.circuit_addrs(self._host.peer_id)[:ADDRS_PER_RELAY])
        life = max(0.0, rsv.expires_at - time.time())
        fresh = relay not in self.held
        self.held[relay] = _Held(rsv, trio.current_time() + RENEW_AT * life, mine)
        if fresh:
            logger.info("reserved a slot on relay %s for %.0f s: reachable at %s", relay,
                        life, ", ".join(mine) or "(the relay gave no address)")
            self._publish()
        return True

    async def _renew(self, relay: str) -> None:
        held = self.held[relay]
        if not await self.reserve(relay, list(held.reservation.addrs)):
            self._drop(relay, "its renewal failed")

    def _drop_lapsed(self) -> None:
        now = time.time()
        for relay, held in list(self.held.items()):
            if not self._host.is_connected(relay):
                self._drop(relay, "the relay disconnected")
            elif now >= held.reservation.expires_at:
                self._drop(relay, "it expired")

    def _drop(self, relay: str, why: str) -> None:
        if self.held.pop(relay, None) is not None:
            logger.info("reservation on relay %s lapsed: %s", relay, why)
            self._publish()

    def _drop_all(self, why: str) -> None:
        for relay in list(self.held):
            self._drop(relay, why)

    def _publish(self) -> None:
        self._relay.advertise(self.circuit_addrs())
        self._on_change()


def relay_service_on(mode: str, status: Reachability) -> bool:
    """Whether to relay for others: ``auto`` only while we are publicly reachable (a
    relay others cannot dial is useless to them and only costs us)."""
    return mode == "on" or (mode == "auto" and status is Reachability.PUBLIC)


async def run_relay_service(relay: Relay, *, mode: str, reachability: ReachabilityState,
                            dht: Dht | None,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                            ) -> None:
    """Keep the hop side on exactly while ``relay_service_on``; while on, say in the DHT
    that we relay (provider key ``/peerllm/relay``) so private nodes find us."""
    task_status.started()
    try:
        while True:
            seen = reachability.status
            on = relay_service_on(mode, seen)
            relay.service.serve(on)
            async with trio.open_nursery() as nursery:
                if on and dht is not None:
                    nursery.start_soon(_provide_relay, dht)
                if mode == "auto":
                    await reachability.wait_changed(seen)
                else:
                    await trio.sleep_forever()
                nursery.cancel_scope.cancel()
    finally:
        relay.service.serve(False)


async def _provide_relay(dht: Dht) -> None:
    key = provider_key(RELAY_PROVIDER_REF)
    while True:
        while not dht.routing_peers():
            await trio.sleep(ROUTING_POLL_S)
        done = False
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            try:
                done = bool(await dht.kad.provide(key))
            except Exception:  # retried below; the DHT is best effort
                logger.debug("providing %s failed", RELAY_PROVIDER_REF, exc_info=True)
        await trio.sleep(PROVIDE_S if done else PROVIDE_RETRY_S)


def _peer_of(addr: str) -> str:
    return addr.rstrip("/").rpartition("/p2p/")[2]

