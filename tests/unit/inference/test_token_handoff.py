"""The generating thread's hand-off into trio: bounded, ordered, ends, and lets go."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.lowlevel

from peerllm.inference.token_handoff import TokenHandoff


async def test_items_arrive_in_order_and_the_producer_waits_for_room() -> None:
    handoff = TokenHandoff[int](2)
    ahead: list[int] = []  # how far ahead of the consumer the thread ever was

    def produce() -> None:
        for i in range(50):
            assert handoff.put(i)
            ahead.append(i)

    got: list[int] = []
    async with trio.open_nursery() as nursery:
        async def consume() -> None:
            while len(got) < 50:
                got.append(await handoff.receive())
                assert len(ahead) - len(got) <= 2  # never more than capacity in flight
                await trio.lowlevel.checkpoint()
        nursery.start_soon(consume)
        await trio.to_thread.run_sync(produce)
    assert got == list(range(50))


async def test_the_end_and_the_last_item_from_trio() -> None:
    handoff = TokenHandoff[str](4)
    await trio.to_thread.run_sync(handoff.put, "a")
    handoff.put_nowait("done")
    handoff.close_producer()
    assert await handoff.receive() == "a"
    assert handoff.receive_nowait() == "done"
    with pytest.raises(trio.EndOfChannel):
        await handoff.receive()
    with pytest.raises(trio.EndOfChannel):
        handoff.receive_nowait()


async def test_receive_nowait_would_block_when_empty() -> None:
    handoff = TokenHandoff[int](1)
    with pytest.raises(trio.WouldBlock):
        handoff.receive_nowait()


async def test_a_gone_consumer_releases_a_blocked_producer() -> None:
    handoff = TokenHandoff[int](1)
    results: list[bool] = []
    blocked = threading.Event()

    def produce() -> None:
        results.append(handoff.put(1))
        blocked.set()
        results.append(handoff.put(2))  # no room: waits until the consumer leaves

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, produce)
        await trio.to_thread.run_sync(blocked.wait)
        handoff.close_consumer()
    assert results == [True, False]
    assert handoff.put(3) is False


async def test_a_cancelled_receive_loses_nothing() -> None:
    handoff = TokenHandoff[int](4)
    with trio.move_on_after(0.01):
        await handoff.receive()
    await trio.to_thread.run_sync(handoff.put, 7)
    assert await handoff.receive() == 7


async def test_a_producer_waiting_for_room_gives_up_when_told_to_stop() -> None:
    handoff = TokenHandoff[int](1)
    stop = threading.Event()
    assert await trio.to_thread.run_sync(handoff.put, 0)  # full; nobody reads

    async def stop_soon() -> None:
        await trio.sleep(0.1)
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_soon)
        with trio.fail_after(3):
            assert not await trio.to_thread.run_sync(handoff.put, 1, stop.is_set)
