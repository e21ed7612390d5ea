"""The announcer: a burst of model changes causes one republish, a later change another."""

from __future__ import annotations

import trio

from peerllm.mesh.announcing import ANNOUNCE_DELAY_S, Announcer


async def test_a_burst_of_announcements_is_one_publish(autojump_clock: trio.abc.Clock) -> None:
    published: list[float] = []

    async def publish() -> None:
        published.append(trio.current_time())

    announcer = Announcer(publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        start = trio.current_time()
        for _ in range(20):
            announcer.announce()
            await trio.sleep(ANNOUNCE_DELAY_S / 40)
        await trio.sleep(ANNOUNCE_DELAY_S * 3)
        assert len(published) == 1 and published[0] >= start + ANNOUNCE_DELAY_S
        announcer.announce()  # a later change: one more
        await trio.sleep(ANNOUNCE_DELAY_S * 3)
        assert len(published) == 2 and announcer.published == 2
        nursery.cancel_scope.cancel()


async def test_a_failed_publish_does_not_stop_the_announcer(
        autojump_clock: trio.abc.Clock) -> None:
    calls: list[int] = []

    async def publish() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    announcer = Announcer(publish)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        announcer.announce()
        await trio.sleep(ANNOUNCE_DELAY_S * 2)
        announcer.announce()
        await trio.sleep(ANNOUNCE_DELAY_S * 2)
        assert len(calls) == 2
        nursery.cancel_scope.cancel()
