"""When a node relays for others, and the switch that follows its reachability."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio

from peerllm.mesh.relaying import relay_service_on, run_relay_service
from peerllm.p2p.reachability_state import Reachability, ReachabilityState
from peerllm.p2p.relay import Relay

U, PUB, PRIV = Reachability.UNKNOWN, Reachability.PUBLIC, Reachability.PRIVATE


@pytest.mark.parametrize(("mode", "status", "on"), [
    ("auto", PUB, True), ("auto", PRIV, False), ("auto", U, False),
    ("on", PRIV, True), ("on", U, True), ("off", PUB, False),
])
def test_relay_service_on(mode: str, status: Reachability, on: bool) -> None:
    assert relay_service_on(mode, status) is on


class _Service:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def serve(self, on: bool) -> None:
        self.calls.append(on)


class _Relay:
    def __init__(self) -> None:
        self.service = _Service()


async def test_auto_follows_reachability_and_stops_off(autojump_clock: trio.abc.Clock) -> None:
    relay, state = _Relay(), ReachabilityState()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_relay_service(
            cast(Relay, relay), mode="auto", reachability=state, dht=None,
            task_status=task_status))
        state.set(PUB, "dialled back")
        await trio.sleep(1)
        state.set(PRIV, "nobody could dial us")
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert relay.service.calls == [False, True, False, False]


async def test_on_serves_whatever_the_reachability(autojump_clock: trio.abc.Clock) -> None:
    relay, state = _Relay(), ReachabilityState(PRIV)
    service: Any = relay.service
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_relay_service(
            cast(Relay, relay), mode="on", reachability=state, dht=None,
            task_status=task_status))
        await trio.sleep(5)
        assert service.calls == [True]
        nursery.cancel_scope.cancel()
