"""The model's slots: our own requests before peers', FIFO within each, peers capped."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from peerllm.inference.priority import Origin, SlotLimiter


class Log:
    """Tasks that take a slot, say when they got it, and hold it until released."""

    def __init__(self, limiter: SlotLimiter) -> None:
        self.limiter = limiter
        self.order: list[str] = []
        self.release: dict[str, trio.Event] = {}

    async def use(self, name: str, origin: Origin) -> None:
        self.release[name] = trio.Event()
        async with self.limiter.hold(origin):
            self.order.append(name)
            await self.release[name].wait()

    async def start(self, nursery: trio.Nursery, name: str, origin: Origin) -> None:
        nursery.start_soon(self.use, name, origin)
        await trio.testing.wait_all_tasks_blocked()

    async def finish(self, name: str) -> None:
        self.release[name].set()
        await trio.testing.wait_all_tasks_blocked()


async def test_a_local_request_goes_before_the_peers_already_waiting() -> None:
    log = Log(SlotLimiter(1))
    async with trio.open_nursery() as nursery:
        for name in ("peer-1", "peer-2", "peer-3"):
            await log.start(nursery, name, "peer")
        await log.start(nursery, "local-1", "local")
        await log.start(nursery, "local-2", "local")
        assert log.limiter.statistics().waiting_local == 2
        for name in ("peer-1", "local-1", "local-2", "peer-2"):
            await log.finish(name)
        await log.finish("peer-3")
    # The running peer is never interrupted; then locals in order, then peers in order.
    assert log.order == ["peer-1", "local-1", "local-2", "peer-2", "peer-3"]


async def test_peers_hold_at_most_their_share_and_the_rest_stays_for_us() -> None:
    log = Log(SlotLimiter(3, peer_limit=1))
    async with trio.open_nursery() as nursery:
        await log.start(nursery, "peer-1", "peer")
        await log.start(nursery, "peer-2", "peer")
        stats = log.limiter.statistics()
        assert (stats.held_peer, stats.waiting_peer) == (1, 1)  # two slots free, held back
        await log.start(nursery, "local-1", "local")
        await log.start(nursery, "local-2", "local")
        assert log.order == ["peer-1", "local-1", "local-2"]
        await log.finish("local-1")
        assert log.order == ["peer-1", "local-1", "local-2"]  # still one peer at a time
        await log.finish("peer-1")
        assert log.order[-1] == "peer-2"
        await log.finish("local-2")
        await log.finish("peer-2")
    assert log.limiter.statistics().held_local == log.limiter.statistics().held_peer == 0


async def test_a_new_peer_request_does_not_pass_a_waiting_one() -> None:
    log = Log(SlotLimiter(2, peer_limit=1))
    async with trio.open_nursery() as nursery:
        await log.start(nursery, "peer-1", "peer")
        await log.start(nursery, "peer-2", "peer")
        await log.start(nursery, "local", "local")
        await log.finish("peer-1")
        await log.start(nursery, "peer-3", "peer")
        await log.finish("local")
        await log.finish("peer-2")
        await log.finish("peer-3")
    assert log.order == ["peer-1", "local", "peer-2", "peer-3"]


async def test_resizing_grants_waiters_at_once_and_a_smaller_total_waits_for_holders(
        ) -> None:
    log = Log(SlotLimiter(1))
    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c", "d"):
            await log.start(nursery, name, "local")
        log.limiter.resize(3)  # a load resolved "auto" to more slots than counted
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(log.order) == ["a", "b", "c"]  # b and c granted together
        log.limiter.resize(1)  # ... or to fewer: holders keep their slots
        await log.finish("a")
        await log.finish("b")
        assert len(log.order) == 3  # c still holds the only slot
        await log.finish("c")
        assert log.order[3:] == ["d"]
        await log.finish("d")
    with pytest.raises(ValueError, match="total"):
        log.limiter.resize(0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    limiter = SlotLimiter(1)
    log = Log(limiter)
    async with trio.open_nursery() as outer:
        await log.start(outer, "peer-1", "peer")
        async with trio.open_nursery() as inner:
            await log.start(inner, "never", "local")
            assert limiter.statistics().waiting_local == 1
            inner.cancel_scope.cancel()
        assert limiter.statistics().waiting_local == 0
        await log.start(outer, "peer-2", "peer")
        await log.finish("peer-1")
        await log.finish("peer-2")
    assert log.order == ["peer-1", "peer-2"]


async def test_a_slot_granted_as_its_waiter_is_cancelled_is_passed_on() -> None:
    limiter = SlotLimiter(1)
    log = Log(limiter)
    go = trio.Event()

    async def peer_cancels_local_then_leaves(local_scope: trio.CancelScope) -> None:
        async with limiter.hold("peer"):
            await go.wait()
            # No checkpoint from here to the release: the local waiter is cancelled
            # and granted the slot before it runs again.
            local_scope.cancel()

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            outer.start_soon(peer_cancels_local_then_leaves, inner.cancel_scope)
            await trio.testing.wait_all_tasks_blocked()
            await log.start(inner, "local", "local")
            await log.start(outer, "peer-2", "peer")
            go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log.order == ["peer-2"]  # "local" never ran; its slot went on
        await log.finish("peer-2")
    assert limiter.statistics().held_local == limiter.statistics().held_peer == 0


@pytest.mark.parametrize(("total", "peer_limit"), [(0, None), (2, 0), (2, 3)])
def test_bad_sizes_are_refused(total: int, peer_limit: int | None) -> None:
    with pytest.raises(ValueError, match=r"total|peer_limit"):
        SlotLimiter(total, peer_limit=peer_limit)
