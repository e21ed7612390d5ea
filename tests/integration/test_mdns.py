"""mDNS discovery between real zeroconf instances bound to 127.0.0.1 (multicast loops back on lo).

Other processes on this machine may be announcing PeerLLM services too, so tests wait for
the peers they expect and never assert that nothing else was seen.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from peerllm.errors import DiscoveryError
from peerllm.p2p.mdns import SERVICE_TYPE, Mdns, MdnsAnnouncement, MdnsPeer, open_mdns

LOOPBACK = ["127.0.0.1"]
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_peer_id() -> str:
    return "12D3KooW" + "".join(random.choices(_B58, k=44))


def announcement(name: str, *, models: Iterable[str] = (), n_addrs: int = 1) -> MdnsAnnouncement:
    pid = new_peer_id()
    addrs = tuple(f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{pid}" for i in range(n_addrs))
    return MdnsAnnouncement(peer_id=pid, name=name, port=4001, addrs=addrs, models=tuple(models))


def as_seen(ann: MdnsAnnouncement) -> MdnsPeer:
    return MdnsPeer(peer_id=ann.peer_id, name=ann.name, addrs=ann.addrs, models=ann.models)


async def wait_for(
    mdns: Mdns, done: Callable[[dict[str, MdnsPeer]], bool], seen: list[MdnsPeer]
) -> dict[str, MdnsPeer]:
    """Read discoveries into ``seen`` until ``done(latest-by-peer-id)`` holds."""
    latest: dict[str, MdnsPeer] = {}
    async for peer in mdns.discovered():
        seen.append(peer)
        latest[peer.peer_id] = peer
        if done(latest):
            return latest
    raise AssertionError("discovered() ended early")


def has(*anns: MdnsAnnouncement) -> Callable[[dict[str, MdnsPeer]], bool]:
    return lambda latest: all(latest.get(a.peer_id) == as_seen(a) for a in anns)


# -- real zeroconf on 127.0.0.1 ---------------------------------------------------------


@pytest.mark.usefixtures("multicast")
async def test_two_nodes_discover_each_other_but_not_themselves() -> None:
    alice = announcement("alice", models=["llama3-8b-q4", "qwen2-7b"], n_addrs=4)
    bob = announcement("bob")
    seen_by_alice: list[MdnsPeer] = []
    seen_by_bob: list[MdnsPeer] = []
    with trio.fail_after(15):
        async with (
            open_mdns(alice, interfaces=LOOPBACK) as m_alice,
            open_mdns(bob, interfaces=LOOPBACK) as m_bob,
        ):
            await wait_for(m_alice, has(bob), seen_by_alice)
            await wait_for(m_bob, has(alice), seen_by_bob)
    assert alice.peer_id not in {p.peer_id for p in seen_by_alice}
    assert bob.peer_id not in {p.peer_id for p in seen_by_bob}


@pytest.mark.usefixtures("multicast")
async def test_three_nodes_all_see_each_other() -> None:
    anns = [announcement(n, models=[f"{n}-model"]) for n in ("ann", "ben", "cat")]
    with trio.fail_after(15):
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(open_mdns(a, interfaces=LOOPBACK)) for a in anns
            ]
            for me, mdns in zip(anns, nodes, strict=True):
                seen: list[MdnsPeer] = []
                await wait_for(mdns, has(*(a for a in anns if a is not me)), seen)
                assert me.peer_id not in {p.peer_id for p in seen}


@pytest.mark.usefixtures("multicast")
async def test_update_republishes_models() -> None:
    alice = announcement("alice", models=["old-model"])
    bob = announcement("bob")
    seen: list[MdnsPeer] = []
    with trio.fail_after(15):
        async with (
            open_mdns(alice, interfaces=LOOPBACK) as m_alice,
            open_mdns(bob, interfaces=LOOPBACK) as m_bob,
        ):
            await wait_for(m_bob, has(alice), seen)
            alice2 = replace(alice, models=("new-model", "other-model"))
            await m_alice.update(alice2)
            await wait_for(m_bob, has(alice2), seen)
            with pytest.raises(ValueError, match="peer_id or name"):
                await m_alice.update(replace(alice, name="mallory"))


def hostile_services(evil_peer_id: str) -> list[ServiceInfo]:
    good_tail = f"/ip4/127.0.0.1/tcp/1/p2p/{evil_peer_id}"
    props: list[dict[bytes, bytes | None]] = [
        {},  # no TXT keys at all
        {b"name": b"evil", b"addrs": good_tail.encode()},  # no peer_id
        {b"peer_id": b"\xff\xfe\xfd", b"name": b"\xc3\x28", b"addrs": b"\x80"},  # not utf-8
        {b"peer_id": evil_peer_id.encode(), b"name": b"n" * 250, b"addrs": good_tail.encode()},
        {b"peer_id": evil_peer_id.encode(), b"name": b"evil", b"addrs": b"/ip4/1.2.3.4/tcp/1"},
        {b"peer_id": None, b"name": None, b"models": b"\x00" * 240},
    ]
    tag = f"{random.randrange(1 << 32):08x}"
    return [
        ServiceInfo(
            SERVICE_TYPE,
            f"evil{i}-{tag}.{SERVICE_TYPE}",
            port=1,
            properties=p,
            server=f"evil{i}-{tag}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for i, p in enumerate(props)
    ]


class IgnoredServices(logging.Handler):
    """Sets ``done`` (in trio) once mdns has logged "ignoring" for every name in ``want``."""

    def __init__(self, want: set[str]) -> None:
        super().__init__(logging.DEBUG)
        self.want, self.ignored, self.done = want, set[str](), trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def emit(self, record: logging.LogRecord) -> None:  # called on zeroconf's browser thread
        if record.msg == "mdns: ignoring %r: %s" and isinstance(record.args, tuple):
            self.ignored.add(str(record.args[0]))
            if self.want <= self.ignored:
                self._token.run_sync_soon(self.done.set)


@pytest.mark.usefixtures("multicast")
async def test_hostile_txt_is_ignored_and_valid_peer_still_found() -> None:
    evil_peer_id = new_peer_id()
    evil = hostile_services(evil_peer_id)
    alice, bob = announcement("alice"), announcement("bob")
    seen: list[MdnsPeer] = []
    handler = IgnoredServices({info.name for info in evil})
    mdns_logger = logging.getLogger("peerllm.p2p.mdns")
    old_level = mdns_logger.level
    mdns_logger.setLevel(logging.DEBUG)
    mdns_logger.addHandler(handler)
    zc = await trio.to_thread.run_sync(
        functools.partial(Zeroconf, interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    )
    try:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                for info in evil:  # ~1.7 s each, so all at once
                    nursery.start_soon(trio.to_thread.run_sync, zc.register_service, info)
            async with (
                open_mdns(alice, interfaces=LOOPBACK) as m_alice,
                open_mdns(bob, interfaces=LOOPBACK),
            ):
                await wait_for(m_alice, has(bob), seen)
                await handler.done.wait()
    finally:
        mdns_logger.removeHandler(handler)
        mdns_logger.setLevel(old_level)
        await trio.to_thread.run_sync(zc.close)
    assert evil_peer_id not in {p.peer_id for p in seen}
    assert all(p.name != "evil" for p in seen)


async def test_interface_that_is_not_on_this_host_raises_discovery_error() -> None:
    alice = announcement("alice")
    with pytest.raises(DiscoveryError, match="mdns") as info:
        async with open_mdns(alice, interfaces=["198.51.100.77"]):  # TEST-NET-2
            pass
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(DiscoveryError, match="not an IPv4 address") as info:
        async with open_mdns(alice, interfaces=["eth0"]):
            pass
    assert isinstance(info.value.__cause__, ValueError)
