"""Revocation gossip over in-memory streams on a virtual clock: pushed at once, relayed
once, exchanged on connect, untrusted records dropped, floods and garbage cut off."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peerllm.auth.issuers import issuer_id_of
from peerllm.auth.revocations import RevocationBook, make_revocation
from peerllm.errors import PeerConnectionLost
from peerllm.mesh.gossip import RESCAN_S, RevocationGossip
from peerllm.p2p.revocations import FRAME_BURST, FloodLimit, RevocationServer, push_records
from peerllm.testing import MemoryNetwork, open_memory_network
from peerllm.wire import revocations as wrev
from peerllm.wire.framing import encode_frame

ISSUER, STRANGER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def record(token_id: str, issuer: Ed25519PrivateKey = ISSUER) -> str:
    now = int(time.time())
    return make_revocation(issuer, token_id, now=now, until=now + 3600)


@dataclass
class Links:
    peers: list[str] = field(default_factory=list)

    def connected_peers(self) -> list[str]:
        return list(self.peers)


@dataclass
class Peer:
    name: str
    book: RevocationBook
    gossip: RevocationGossip
    links: Links
    heard: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


@asynccontextmanager
async def gossiping(tmp_path: Path, names: list[str], *,
                    trusted: tuple[Ed25519PrivateKey, ...] = (ISSUER,)
                    ) -> AsyncIterator[tuple[MemoryNetwork, dict[str, Peer]]]:
    trust = frozenset(issuer_id_of(k) for k in trusted)
    async with open_memory_network() as net, trio.open_nursery() as nursery:
        peers: dict[str, Peer] = {}
        for name in names:
            book = RevocationBook(tmp_path / name, trusted=trust)
            links = Links()
            gossip = RevocationGossip(book=book, trusted=trust, opener=net.opener(name),
                                      links=links)
            peer = Peer(name, book, gossip, links)

            def on_records(sender: str, records: tuple[str, ...], p: Peer = peer) -> None:
                p.heard.append((sender, records))
                p.gossip.on_records(sender, records)

            net.serve(name, wrev.PROTOCOL_ID, RevocationServer(on_records).handle)
            await nursery.start(gossip.run)
            peers[name] = peer
        yield net, peers
        nursery.cancel_scope.cancel()


def connect(peers: dict[str, Peer], a: str, b: str) -> None:
    """Both ends hear of the new connection, as membership tells them."""
    peers[a].links.peers.append(b)
    peers[b].links.peers.append(a)
    peers[a].gossip.peer_connected(b)
    peers[b].gossip.peer_connected(a)


def revoked(peer: Peer, token_id: str) -> bool:
    return peer.book.is_revoked(issuer_id_of(ISSUER), token_id)


async def test_a_revocation_is_pushed_at_once_and_relayed_along_a_chain(
        autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    async with gossiping(tmp_path, ["a", "b", "c"]) as (net, p):
        connect(p, "a", "b")
        connect(p, "b", "c")
        await trio.sleep(1)
        assert net.opened == []  # empty sets are not pushed
        start = trio.current_time()
        p["a"].book.revoke(ISSUER, "t1", now=int(time.time()), until=int(time.time()) + 60)
        while not revoked(p["c"], "t1"):
            await trio.sleep(0.05)
        assert trio.current_time() - start <= 0.5  # a poll on a, a relay on b
        await trio.sleep(5)
        pushes = [(src, dst) for src, dst, _ in net.opened]
        assert pushes == [("a", "b"), ("b", "c")]  # never back to where it came from
        assert (tmp_path / "c").is_dir() and any((tmp_path / "c").iterdir())  # persisted


async def test_a_record_dropped_into_the_folder_is_spread(autojump_clock: trio.abc.Clock,
                                                          tmp_path: Path) -> None:
    async with gossiping(tmp_path, ["a", "b"]) as (_, p):
        connect(p, "a", "b")
        # What `peerllm token revoke` does: another book on the same folder writes a file.
        RevocationBook(tmp_path / "a", trusted={issuer_id_of(ISSUER)}).revoke(
            ISSUER, "t2", now=int(time.time()), until=int(time.time()) + 60)
        await trio.sleep(RESCAN_S + 0.5)
        assert revoked(p["a"], "t2") and revoked(p["b"], "t2")


async def test_a_new_connection_exchanges_the_full_sets(autojump_clock: trio.abc.Clock,
                                                        tmp_path: Path) -> None:
    async with gossiping(tmp_path, ["a", "b"]) as (_, p):
        p["a"].gossip.on_records("x", (record("ta1"), record("ta2")))
        p["b"].gossip.on_records("x", (record("tb1"),))
        await trio.sleep(1)
        connect(p, "a", "b")  # b was down when they were revoked
        await trio.sleep(1)
        for name in "ab":
            assert {revoked(p[name], t) for t in ("ta1", "ta2", "tb1")} == {True}
        # The echo of a's own records came back to it once, and cost no verification.
        assert len(p["a"].book) == 3


async def test_records_of_untrusted_issuers_are_dropped_and_not_relayed(
        autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    async with gossiping(tmp_path, ["a", "b"]) as (net, p):
        connect(p, "a", "b")
        good = record("t3")
        p["a"].gossip.on_records("x", (record("s1", STRANGER), "not.a.jwt", good))
        await trio.sleep(1)
        assert len(p["a"].book) == 1 and revoked(p["b"], "t3")
        assert p["b"].heard == [("a", (good,))]
        assert not p["b"].book.is_revoked(issuer_id_of(STRANGER), "s1")
        assert len(net.opened) == 1


async def test_a_flooding_peer_is_cut_off(autojump_clock: trio.abc.Clock,
                                          tmp_path: Path) -> None:
    calls: list[int] = []
    async with open_memory_network() as net:
        net.serve("victim", wrev.PROTOCOL_ID,
                  RevocationServer(lambda peer, records: calls.append(len(records))).handle)
        frame = wrev.encode(wrev.Records(records=("x.y.z",) * wrev.MAX_RECORDS_PER_FRAME))
        stream = await net.opener("flooder").open_stream("victim", wrev.PROTOCOL_ID)

        async def flood() -> None:
            for _ in range(FRAME_BURST * 3):
                await stream.send_all(frame)
                await trio.lowlevel.checkpoint()  # let the victim read as we go

        with pytest.raises(PeerConnectionLost):
            await flood()
    assert len(calls) == FRAME_BURST  # the burst, then nothing until it refills
    assert set(calls) == {wrev.MAX_RECORDS_PER_FRAME}


def test_the_flood_limit_refills_over_time() -> None:
    limit = FloodLimit(per_s=2.0, burst=3)
    assert [limit.take("p", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.take("q", 0.0)  # per peer
    assert limit.take("p", 0.5) and not limit.take("p", 0.5)
    assert [limit.take("p", 10.0) for _ in range(4)] == [True, True, True, False]


async def test_garbage_and_too_many_streams_are_reset_and_the_server_stays_up(
        autojump_clock: trio.abc.Clock) -> None:
    calls: list[str] = []
    async with open_memory_network() as net:
        net.serve("srv", wrev.PROTOCOL_ID,
                  RevocationServer(lambda peer, records: calls.extend(records),
                                   max_streams_per_peer=1).handle)
        opener = net.opener("bad")
        bad = await opener.open_stream("srv", wrev.PROTOCOL_ID)
        await bad.send_all(encode_frame({"v": 1, "t": "records", "records": "nope"}))
        with pytest.raises(PeerConnectionLost):
            await bad.receive_some()
        held = await opener.open_stream("srv", wrev.PROTOCOL_ID)  # open, silent
        await trio.sleep(0.1)
        second = await opener.open_stream("srv", wrev.PROTOCOL_ID)
        with pytest.raises(PeerConnectionLost):
            await second.receive_some()
        with pytest.raises(PeerConnectionLost):  # the silent one is dropped after a while
            await held.receive_some()
        await push_records(net.opener("good"), "srv", ["a.b.c"])
        await trio.sleep(0.1)
    assert calls == ["a.b.c"]
