"""mesh.membership when the router has nowhere left to send a request: redial the
model's known providers that dropped out (a replica restarted moments ago) before
walking the DHT. The host, node-info client and DHT are small fakes."""

from __future__ import annotations

import time
from typing import Literal

import trio

from peerllm.p2p.host import ConnectionEvent
from peerllm.p2p.registry import PeerState, Source

from .fakes import MODEL, FakeDht, FakeLinks, make_membership, written_off


async def test_discover_redials_known_providers_that_dropped_out_before_the_dht(
        autojump_clock: trio.abc.Clock) -> None:
    registry = written_off("restarted", "still-down", "refused", "other-model",
                           refused=("refused",))
    links, dht = FakeLinks(up={"restarted"}), FakeDht()
    membership = make_membership(registry, links, dht)
    await membership.discover(MODEL)
    assert sorted(links.dialled) == ["restarted", "still-down"]
    assert registry.get("restarted").state is PeerState.HEALTHY  # type: ignore[union-attr]
    assert dht.asked == []  # one provider is back: no DHT walk
    links.up.clear()
    await membership.discover(MODEL)
    assert dht.asked == [MODEL]  # nobody came back: ask the DHT


async def test_a_written_off_peer_that_connects_again_is_asked_for_node_info_at_once(
        autojump_clock: trio.abc.Clock) -> None:
    registry = written_off("restarted")
    membership = make_membership(registry, FakeLinks(up=set()), FakeDht())
    async with trio.open_nursery() as nursery:
        membership._on_connection_event(ConnectionEvent(
            kind="connected", peer_id="restarted", inbound=True, addr=None), nursery)
    entry = registry.get("restarted")
    assert entry is not None and entry.state is PeerState.HEALTHY
    assert entry.info is not None and entry.info.boot_nonce == b"\x02" * 16  # the new process
    assert trio.current_time() == 0  # not at the next heartbeat


async def test_every_new_connection_is_told_to_the_hook(autojump_clock: trio.abc.Clock) -> None:
    connected: list[str] = []
    membership = make_membership(written_off("p"), FakeLinks(up=set()), FakeDht(), connected)
    async with trio.open_nursery() as nursery:
        kinds: list[tuple[Literal["connected", "disconnected"], bool]] = [
            ("connected", True), ("disconnected", True), ("connected", False)]
        for kind, inbound in kinds:
            membership._on_connection_event(ConnectionEvent(
                kind=kind, peer_id="p", inbound=inbound, addr=None), nursery)
    assert connected == ["p", "p"]  # each (re)connection, either direction; not the drop


async def test_an_unknown_model_costs_one_dht_lookup_per_ttl(
        autojump_clock: trio.abc.Clock) -> None:
    dht = FakeDht()
    membership = make_membership(written_off(), FakeLinks(up=set()), dht)
    ttl = membership.unknown_models.ttl_s
    for _ in range(50):
        for model in ("nope-1", "nope-2"):
            await membership.discover(model)
    assert dht.asked == ["nope-1", "nope-2"]
    await trio.sleep(ttl)
    await membership.discover("nope-1")
    assert dht.asked == ["nope-1", "nope-2", "nope-1"]  # the TTL passed: asked again


async def test_a_model_a_peer_starts_serving_is_found_despite_the_cache(
        autojump_clock: trio.abc.Clock) -> None:
    registry = written_off()
    dht = FakeDht()
    links = FakeLinks(up={"newcomer"})
    membership = make_membership(registry, links, dht)
    await membership.discover(MODEL)
    assert membership.unknown_models.missing(MODEL, trio.current_time())
    registry.saw("newcomer", Source.BOOTSTRAP, now=time.time())
    await membership.refresh_peer("newcomer")  # its node-info lists MODEL
    assert not membership.unknown_models.missing(MODEL, trio.current_time())
    dht.providers[MODEL] = [("newcomer", ["/ip4/127.0.0.1/tcp/1/p2p/newcomer"])]
    await membership.discover(MODEL)
    assert dht.asked == [MODEL, MODEL]


async def test_a_model_with_providers_is_not_negative_cached(
        autojump_clock: trio.abc.Clock) -> None:
    dht = FakeDht()
    dht.providers[MODEL] = [("far", ["/ip4/127.0.0.1/tcp/1/p2p/far"])]
    links = FakeLinks(up=set())
    membership = make_membership(written_off(), links, dht)
    await membership.discover(MODEL)
    await membership.discover(MODEL)
    assert dht.asked == [MODEL, MODEL]  # it exists (just not reachable yet): keep asking
    assert links.dialled == ["far", "far"]
