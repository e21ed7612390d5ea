"""Router and membership under load and churn, on a virtual clock: busy peers are waited
for by every request, our own limits are never a peer's fault, and concurrent requests
share one redial of a restarted replica."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from peerllm.errors import InferenceRejected, ModelBusy, NoRoute, PeerLLMError
from peerllm.p2p.registry import PeerState

from .fakes import (
    MODEL,
    FakeDht,
    FakeLinks,
    make_membership,
    make_router,
    ok,
    run,
    state,
    written_off,
)


async def test_a_request_arriving_during_another_requests_retry_after_waits_too(
        autojump_clock: trio.abc.Clock) -> None:
    busy = InferenceRejected("busy", "queue full", retryable=True, retry_after_s=5.0)
    router, node, _ = make_router({"a": [[busy], ok(), ok()]})
    texts: list[str] = []

    async def one(delay: float) -> None:
        await trio.sleep(delay)
        texts.append((await run(router))[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0.0)
        nursery.start_soon(one, 1.0)  # "a" is inside the first one's Retry-After
    assert texts == ["ab", "ab"]
    assert node.discovered == [] and state(router, "a") == "closed"


async def test_a_busy_peer_that_leaves_is_not_waited_for(
        autojump_clock: trio.abc.Clock) -> None:
    import time

    busy = InferenceRejected("too_many_streams", "8", retryable=True, retry_after_s=0.2)
    router, node, _ = make_router({"a": [[busy]]})

    async def peer_leaves() -> None:
        await trio.sleep(0.1)
        node.registry.failed("a", "gone", now=time.time(), max_misses=1)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer_leaves)
        with pytest.raises(NoRoute):
            await run(router)
    assert trio.current_time() - start < 6.0  # one rediscovery at most, no busy-polling


class _FullEngine:
    def __init__(self) -> None:
        self.calls = 0

    @asynccontextmanager
    async def stream(self, req: Any, *, origin: str) -> AsyncIterator[Any]:
        self.calls += 1
        assert origin == "local"  # our router places our own users' requests
        raise ModelBusy(req.model, retry_after_s=2.0)
        yield  # pragma: no cover


async def test_our_own_full_queue_is_answered_at_once_with_its_retry_after(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, _ = make_router({})
    engine = _FullEngine()
    node.engine = engine
    status = types.SimpleNamespace(id=MODEL, state="loaded", memory_bytes=0, active=1,
                                   queued=8, tokens_per_second=None, digest=None)
    node.model_statuses = lambda: [status]  # type: ignore[method-assign]
    node.capacity = lambda: 1  # type: ignore[method-assign]
    start = trio.current_time()
    with pytest.raises(NoRoute) as err:
        await run(router)
    assert engine.calls == 1 and err.value.retry_after_s == 2.0
    assert trio.current_time() - start < 6.0


async def test_running_out_of_our_own_deadline_does_not_open_the_peers_breaker(
        autojump_clock: trio.abc.Clock) -> None:
    late = InferenceRejected("timeout", "request deadline passed", retryable=True)
    router, _, _ = make_router({"a": [[0.5, "x", 9.4, late]]})
    for _ in range(3):
        with pytest.raises(PeerLLMError):
            await run(router, deadline_s=10.0)
    assert state(router, "a") == "closed"


async def test_concurrent_requests_share_one_redial_of_a_restarted_replica(
        autojump_clock: trio.abc.Clock) -> None:
    class SlowLinks(FakeLinks):
        async def connect(self, peer_id: str, addrs: Any) -> None:
            await trio.sleep(0.5)  # a real dial takes a moment
            await super().connect(peer_id, addrs)

    registry = written_off("restarted")
    membership = make_membership(registry, SlowLinks(up={"restarted"}), FakeDht())
    seen: list[bool] = []

    async def request() -> None:
        await membership.discover(MODEL)
        e = registry.get("restarted")
        seen.append(e is not None and e.state is PeerState.HEALTHY)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request)
        nursery.start_soon(request)
    assert seen == [True, True]
