"""SwarmDownload over in-memory sources: bad chunks, stalls, resume, digests and space."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import trio
import trio.testing

from peerllm.errors import DigestMismatch, NoSource, NotEnoughSpace, SourceFailed
from peerllm.transfer.partial import partial_path, state_path
from peerllm.transfer.ports import Deliver, Progress
from peerllm.transfer.swarm import SwarmDownload
from peerllm.wire.blob import (
    DEFAULT_CHUNK_BYTES,
    MAX_FILE_BYTES,
    MIN_CHUNK_BYTES,
    Manifest,
    manifest_of,
)

CB = MIN_CHUNK_BYTES
DATA = os.urandom(20 * CB + 123)
MANIFEST = manifest_of(DATA, CB)


class MemorySource:
    """A source holding ``DATA``; misbehaves as told."""

    def __init__(self, label: str, *, corrupt: bool = False, stall_after: int | None = None,
                 busy: int = 0, offer: Manifest | None = MANIFEST,
                 kind: Literal["peer", "http"] = "peer", delay_s: float = 0.0,
                 after: Callable[[int], None] | None = None, data: bytes = DATA) -> None:
        self._label = label
        self.data = data
        self._kind: Literal["peer", "http"] = kind
        self.corrupt = corrupt
        self.stall_after = stall_after
        self.busy = busy
        self.offer = offer
        self.delay_s = delay_s
        self.after = after
        self.fetched: list[int] = []  # chunks delivered
        self.asked: list[int] = []

    @property
    def label(self) -> str:
        return self._label

    @property
    def kind(self) -> Literal["peer", "http"]:
        return self._kind

    async def manifest(self) -> Manifest | None:
        await trio.lowlevel.checkpoint()
        return self.offer

    async def content_length(self) -> int | None:
        await trio.lowlevel.checkpoint()
        return len(self.data)

    async def fetch(self, first: int, count: int, *, chunk_bytes: int, size: int,
                    deliver: Deliver) -> None:
        self.asked.extend(range(first, first + count))
        if self.busy:
            self.busy -= 1
            raise SourceFailed(self.label, "busy", "too many downloads", retry_after_s=2.0)
        for i in range(first, first + count):
            if len(self.fetched) == self.stall_after:
                await trio.sleep_forever()
            await trio.sleep(self.delay_s)
            chunk = self.data[i * chunk_bytes:min(size, (i + 1) * chunk_bytes)]
            if self.corrupt:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            self.fetched.append(i)
            await deliver(i, chunk)
            if self.after is not None:
                self.after(i)


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only when the loop has been idle a while: hashing and
    writes run in worker threads, and a clock jumping while they run would make every
    source look stalled."""
    return trio.testing.MockClock(autojump_threshold=0.05)


def big_disk(_: Path) -> int:
    return 1 << 40


def dropped(p: Progress) -> dict[str, str | None]:
    return {s.label: s.reason for s in p.sources if s.state == "dropped"}


async def test_a_corrupting_source_is_dropped_and_named(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    seen: list[Progress] = []
    dl = SwarmDownload(target=target, expected_digest=MANIFEST.digest,
                       sources=[MemorySource("good1"), MemorySource("liar", corrupt=True),
                                MemorySource("good2")],
                       on_progress=seen.append, free_bytes=big_disk)
    assert await dl.run() == MANIFEST
    assert target.read_bytes() == DATA
    assert not partial_path(target).exists() and not state_path(target).exists()
    reasons = dropped(dl.progress())
    assert list(reasons) == ["liar"]
    assert (reasons["liar"] or "").startswith("sent a bad chunk ")
    assert seen[-1].state == "done" and seen[-1].completed == len(DATA)


async def test_a_stalling_source_is_dropped(tmp_path: Path, patient_clock: trio.abc.Clock
                                            ) -> None:
    target = tmp_path / "m.gguf"
    staller = MemorySource("slowpoke", stall_after=0)
    dl = SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                       sources=[staller, MemorySource("ok", delay_s=1.0)],
                       stall_timeout_s=5.0, free_bytes=big_disk)
    await dl.run()
    assert target.read_bytes() == DATA
    assert "stalled" in (dropped(dl.progress())["slowpoke"] or "")


async def test_a_busy_source_is_tried_again(tmp_path: Path, patient_clock: trio.abc.Clock
                                            ) -> None:
    target = tmp_path / "m.gguf"
    source = MemorySource("busy", busy=2)
    dl = SwarmDownload(target=target, manifest=MANIFEST, expected_digest=MANIFEST.digest,
                       sources=[source], free_bytes=big_disk)
    await dl.run()
    assert target.read_bytes() == DATA and sorted(source.fetched) == list(range(MANIFEST.count))


async def test_a_cancelled_download_resumes_with_the_chunks_on_disk(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    with trio.CancelScope() as scope:
        def stop_after_five(i: int) -> None:
            if len(first.fetched) == 5:
                scope.cancel()
        first = MemorySource("a", after=stop_after_five)
        await SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                            sources=[first], free_bytes=big_disk).run()
    assert scope.cancelled_caught and not target.exists()
    assert partial_path(target).exists() and state_path(target).exists()

    second = MemorySource("b")
    again = SwarmDownload(target=target, manifest=MANIFEST, expected_digest=MANIFEST.digest,
                          sources=[second], free_bytes=big_disk)
    await again.run()
    assert target.read_bytes() == DATA
    assert sorted(second.fetched) == list(range(5, MANIFEST.count))
    assert again.progress().resumed == 5 * CB


async def test_a_cancelled_swarm_fetches_no_delivered_chunk_again(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    delivered: list[int] = []
    with trio.CancelScope() as scope:
        def note(i: int) -> None:
            delivered.append(i)
            if len(delivered) == 9:
                scope.cancel()
        first = [MemorySource(f"p{k}", after=note) for k in range(3)]
        await SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                            sources=first, free_bytes=big_disk).run()
    assert scope.cancelled_caught
    again = [MemorySource(f"q{k}") for k in range(3)]
    await SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                        sources=again, free_bytes=big_disk).run()
    refetched = {i for src in again for i in src.fetched}
    assert target.read_bytes() == DATA
    assert refetched.isdisjoint(delivered)


async def test_a_torn_state_record_costs_only_that_chunk(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    with trio.CancelScope() as scope:
        first = MemorySource("a", after=lambda i: scope.cancel() if i == 3 else None)
        await SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                            sources=[first], free_bytes=big_disk).run()
    raw = state_path(target).read_bytes()
    state_path(target).write_bytes(raw[:-20])  # chunk 3's record, half written
    second = MemorySource("b")
    await SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                        sources=[second], free_bytes=big_disk).run()
    assert target.read_bytes() == DATA
    assert sorted(second.fetched) == list(range(3, MANIFEST.count))


async def test_a_partial_of_another_file_is_discarded(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    other = os.urandom(len(DATA))
    other_manifest = manifest_of(other, CB)
    with trio.CancelScope() as scope:
        first = MemorySource("a", offer=other_manifest, data=other,
                             after=lambda i: scope.cancel() if i == 3 else None)
        await SwarmDownload(target=target, manifest=other_manifest, expected_digest=None,
                            sources=[first], free_bytes=big_disk).run()
    second = MemorySource("b")
    await SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                        sources=[second], free_bytes=big_disk).run()
    assert target.read_bytes() == DATA
    assert sorted(second.fetched) == list(range(MANIFEST.count))


async def test_a_wrong_whole_file_digest_installs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    lying = Manifest(digest="sha256:" + "0" * 64, size=MANIFEST.size, chunk_bytes=CB,
                     chunks=MANIFEST.chunks)
    dl = SwarmDownload(target=target, manifest=lying, expected_digest=None,
                       sources=[MemorySource("a", offer=lying)], free_bytes=big_disk)
    with pytest.raises(DigestMismatch) as info:
        await dl.run()
    assert info.value.actual == MANIFEST.digest
    assert not target.exists() and not partial_path(target).exists()
    assert not state_path(target).exists()
    assert dl.progress().state == "failed"


async def test_not_enough_space_is_refused_before_downloading(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    source = MemorySource("a")
    dl = SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                       sources=[source], free_bytes=lambda _: 1000)
    with pytest.raises(NotEnoughSpace) as info:
        await dl.run()
    assert info.value.free == 1000 and info.value.needed > len(DATA)
    assert source.fetched == [] and not partial_path(target).exists()


async def test_without_a_manifest_http_sources_are_read_in_order(
        tmp_path: Path, patient_clock: trio.abc.Clock) -> None:
    target = tmp_path / "m.gguf"
    data = os.urandom(5 * DEFAULT_CHUNK_BYTES + 7)  # no manifest: the default chunk size
    want = manifest_of(data)
    broken = MemorySource("https://a.example", kind="http", offer=None, stall_after=2,
                          data=data)
    good = MemorySource("https://b.example", kind="http", offer=None, data=data)
    dl = SwarmDownload(target=target, expected_digest=want.digest, sources=[broken, good],
                       stall_timeout_s=1.0, free_bytes=big_disk)
    assert await dl.run() == want
    assert target.read_bytes() == data
    assert broken.fetched == [0, 1] and good.fetched == [2, 3, 4, 5]
    assert "stalled" in (dropped(dl.progress())["https://a.example"] or "")


async def test_without_a_manifest_a_bad_file_is_caught_by_its_digest(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    bad = MemorySource("https://a.example", kind="http", offer=None, corrupt=True)
    dl = SwarmDownload(target=target, expected_digest=MANIFEST.digest, sources=[bad],
                       free_bytes=big_disk)
    with pytest.raises(DigestMismatch):
        await dl.run()
    assert not target.exists()


class HugeSource(MemorySource):
    async def content_length(self) -> int | None:
        return MAX_FILE_BYTES + 1


async def test_a_source_claiming_a_file_over_the_limit_is_dropped(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    dl = SwarmDownload(target=target, expected_digest=None, free_bytes=lambda _: 1 << 62,
                       sources=[HugeSource("https://a.example", kind="http", offer=None)])
    with pytest.raises(NoSource) as info:
        await dl.run()
    assert "more than" in info.value.reasons["https://a.example"]
    assert not partial_path(target).exists()


async def test_the_fallback_joins_when_no_peer_is_left(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    hub = MemorySource("https://hub.example", kind="http", offer=None)
    dl = SwarmDownload(target=target, expected_digest=MANIFEST.digest,
                       sources=[MemorySource("liar", corrupt=True)], fallback=[hub],
                       free_bytes=big_disk)
    assert await dl.run() == MANIFEST
    assert hub.fetched and target.read_bytes() == DATA


async def test_the_fallback_waits_while_a_peer_serves(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    hub = MemorySource("https://hub.example", kind="http", offer=None)
    await SwarmDownload(target=target, expected_digest=MANIFEST.digest,
                        sources=[MemorySource("peer")], fallback=[hub],
                        free_bytes=big_disk).run()
    assert hub.fetched == []


async def test_a_source_offering_another_file_is_dropped(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    other = manifest_of(b"x" * 1000, CB)
    dl = SwarmDownload(target=target, expected_digest=MANIFEST.digest,
                       sources=[MemorySource("other", offer=other), MemorySource("right")],
                       free_bytes=big_disk)
    await dl.run()
    assert (dropped(dl.progress())["other"] or "").startswith("bad_answer")


async def test_without_a_digest_the_majority_manifest_wins(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    other = manifest_of(os.urandom(1000), CB)
    dl = SwarmDownload(target=target, expected_digest=None, free_bytes=big_disk,
                       sources=[MemorySource("a"), MemorySource("odd", offer=other),
                                MemorySource("b")])
    assert await dl.run() == MANIFEST
    assert list(dropped(dl.progress())) == ["odd"]
    assert (dropped(dl.progress())["odd"] or "").startswith("bad_answer")


async def test_every_source_failing_is_no_source_with_reasons(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    dl = SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                       sources=[MemorySource("x", corrupt=True), MemorySource("y", corrupt=True)],
                       free_bytes=big_disk)
    with pytest.raises(NoSource) as info:
        await dl.run()
    assert set(info.value.reasons) == {"x", "y"}
    assert all(r.startswith("sent a bad chunk") for r in info.value.reasons.values())
    assert not target.exists()  # the partial stays, to resume from another source


async def test_a_straggler_near_the_end_is_overtaken(tmp_path: Path,
                                                     patient_clock: trio.abc.Clock) -> None:
    target = tmp_path / "m.gguf"
    slow = MemorySource("slow", delay_s=50.0)
    fast = MemorySource("fast", delay_s=0.1)
    dl = SwarmDownload(target=target, manifest=MANIFEST, expected_digest=None,
                       sources=[slow, fast], stall_timeout_s=100.0, free_bytes=big_disk)
    await dl.run()
    assert target.read_bytes() == DATA
    # The slow source's chunks were also asked of the fast one (endgame), and the slow
    # one's range was given up once they were in: the download did not wait for it.
    assert set(slow.asked) & set(fast.fetched)
    assert trio.current_time() < 50.0
