"""The Pulls service over fakes of its ports: what a ref names, joining, already-present
files, subscribers, failures and the list of transfers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from peerllm.errors import NoSource, TransferError
from peerllm.mesh.pull_ports import Holder
from peerllm.mesh.pulls import Pulls, ref_kind
from peerllm.transfer.ports import Progress
from peerllm.wire import blob as wb
from tests.unit.mesh.pull_fakes import MANIFEST, Downloads, Entry, Finder, Hub, Installer, Peers

DIGEST = MANIFEST.digest
OTHER = "sha256:" + "ab" * 32


def make(finder: Finder | None = None, peers: Peers | None = None, hub: Hub | None = None,
         downloads: Downloads | None = None, installer: Installer | None = None) -> Pulls:
    return Pulls(finder=finder or Finder(), peers=peers or Peers([]), hub=hub or Hub(),
                 open_download=downloads or Downloads(), installer=installer or Installer())


@pytest.fixture
async def running() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


def test_ref_kinds() -> None:
    assert ref_kind("gemma3:270m") == "model"
    assert ref_kind(DIGEST) == "digest"
    assert ref_kind("https://example.com/m.gguf") == "hub"
    assert ref_kind("hf://owner/repo/m.gguf") == "hub"
    with pytest.raises(ValueError, match="model"):
        ref_kind("  ")
    with pytest.raises(ValueError, match="model: 'sha256:ABC': a digest is sha256:<64"):
        ref_kind("sha256:ABC")
    assert ref_kind("sha256-0123456789ab") == "model"  # the id of a file nobody named


async def test_a_model_id_is_pulled_from_the_digest_most_holders_advertise(
        running: trio.Nursery) -> None:
    finder = Finder({"m": [Holder(peer_id="a", model_id="m", digest=DIGEST),
                           Holder(peer_id="b", model_id="m", digest=DIGEST),
                           Holder(peer_id="c", model_id="m", digest=OTHER)]})
    downloads, installer = Downloads(), Installer()
    pulls = make(finder, Peers(["a", "b"], wb.ModelMeta(id="m", chat_format="chatml")),
                 downloads=downloads, installer=installer)
    await running.start(pulls.run)
    entry = await pulls.start("m").wait()
    assert entry.digest == DIGEST and entry.id == "m"
    plan = downloads.opened[0].plan
    assert [s.label for s in plan.sources] == ["a", "b"]  # c holds another file
    assert plan.manifest == MANIFEST and not plan.fallback
    _, meta, source = installer.installed[0]
    assert meta.chat_format == "chatml" and source == "peer:a,peer:b"


async def test_a_digest_already_held_is_done_at_once(running: trio.Nursery) -> None:
    downloads = Downloads()
    pulls = make(downloads=downloads,
                 installer=Installer([Entry(id="m", digest=DIGEST, size=MANIFEST.size)]))
    await running.start(pulls.run)
    t = pulls.start(DIGEST)
    assert (await t.wait()).id == "m"
    assert t.progress.state == "done" and t.progress.completed == MANIFEST.size
    assert downloads.opened == []


async def test_the_same_file_in_flight_is_joined(running: trio.Nursery) -> None:
    gate = trio.Event()
    downloads = Downloads(gate=gate)
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 downloads=downloads)
    await running.start(pulls.run)
    first = pulls.start(DIGEST)
    second = pulls.start("sha256-" + DIGEST.split(":")[1])
    assert second is first
    await first.wait_resolved()
    assert pulls.pulling(DIGEST)
    assert [t.id for t, _ in pulls.downloads()] == [first.id]
    gate.set()
    await first.wait()
    assert not pulls.pulling(DIGEST) and len(downloads.opened) == 1
    assert pulls.transfers() == [first]


async def test_a_url_with_peers_holding_its_digest_uses_the_hub_as_fallback(
        running: trio.Nursery) -> None:
    downloads = Downloads()
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 Hub(digest=DIGEST), downloads)
    await running.start(pulls.run)
    entry = await pulls.start("hf://owner/repo/tiny.gguf").wait()
    plan = downloads.opened[0].plan
    assert [s.label for s in plan.sources] == ["a"]
    assert [s.kind for s in plan.fallback] == ["http"]
    assert entry.id == "tiny"


async def test_a_url_nobody_holds_comes_from_the_hub(running: trio.Nursery) -> None:
    downloads = Downloads()
    pulls = make(hub=Hub(), downloads=downloads)
    await running.start(pulls.run)
    entry = await pulls.start("https://example.com/x/tiny.gguf", model_id="named").wait()
    plan = downloads.opened[0].plan
    assert [s.kind for s in plan.sources] == ["http"] and plan.digest is None
    assert plan.url == "https://example.com/x/tiny.gguf" and entry.id == "named"


async def test_no_holder_is_a_no_source_error_naming_the_model(running: trio.Nursery) -> None:
    pulls = make()
    await running.start(pulls.run)
    t = pulls.start("nowhere")
    with pytest.raises(NoSource, match="nowhere"):
        await t.wait()
    assert t.progress.state == "failed" and t.progress.error is not None
    assert pulls.transfers() == [t]


async def test_holders_that_refuse_are_the_reasons(running: trio.Nursery) -> None:
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers([]))
    await running.start(pulls.run)
    with pytest.raises(NoSource) as info:
        await pulls.start(DIGEST).wait()
    assert list(info.value.reasons) == ["a"] and "not_found" in info.value.reasons["a"]


async def test_a_failed_download_is_reported_and_listed(running: trio.Nursery) -> None:
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 downloads=Downloads(fail=True))
    await running.start(pulls.run)
    t = pulls.start(DIGEST)
    with pytest.raises(NoSource, match="every source failed"):
        await t.wait()
    assert t.error is not None and t.finished_at is not None


async def test_subscribers_see_the_latest_progress_and_the_end(running: trio.Nursery) -> None:
    gate = trio.Event()
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 downloads=Downloads(gate=gate))
    await running.start(pulls.run)
    t = pulls.start(DIGEST)
    seen: list[Progress] = []
    async with t.subscribe() as updates:
        async for p in updates:
            seen.append(p)
            if p.state == "downloading":
                gate.set()
    assert seen[-1].state == "done"
    assert "downloading" in [p.state for p in seen]


async def test_a_subscriber_that_never_reads_does_not_hold_up_the_download(
        running: trio.Nursery) -> None:
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]))
    await running.start(pulls.run)
    t = pulls.start(DIGEST)
    async with t.subscribe():
        await t.wait()
    assert t.progress.state == "done"


async def test_bad_digest_argument_names_the_field(running: trio.Nursery) -> None:
    pulls = make()
    await running.start(pulls.run)
    with pytest.raises(ValueError, match="digest"):
        pulls.start("m", digest="nope")


async def test_recent_transfers_are_bounded(running: trio.Nursery) -> None:
    pulls = Pulls(finder=Finder(), peers=Peers([]), hub=Hub(), open_download=Downloads(),
                  installer=Installer(), recent=2)
    await running.start(pulls.run)
    for name in ("a", "b", "c"):
        with pytest.raises(NoSource):
            await pulls.start(name).wait()
    assert [t.ref for t in pulls.transfers()] == ["c", "b"]


async def test_a_model_only_this_node_serves_is_done_at_once(running: trio.Nursery) -> None:
    pulls = make(installer=Installer([Entry(id="m", digest=DIGEST, size=MANIFEST.size)]))
    await running.start(pulls.run)
    assert (await pulls.start("m").wait()).digest == DIGEST


async def test_a_model_id_with_a_digest_is_pulled_from_that_files_holders(
        running: trio.Nursery) -> None:
    downloads, installer = Downloads(), Installer()
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 downloads=downloads, installer=installer)
    await running.start(pulls.run)
    entry = await pulls.start("m", digest=DIGEST).wait()
    assert entry.id == "m" and [s.label for s in downloads.opened[0].plan.sources] == ["a"]


async def test_a_users_digest_pull_takes_the_holders_name_and_may_replace_its_file(
        running: trio.Nursery) -> None:
    installer = Installer([Entry(id="m", digest=OTHER, size=1)])
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}),
                 Peers(["a"], wb.ModelMeta(id="m")), installer=installer)
    await running.start(pulls.run)
    assert (await pulls.start(DIGEST).wait()).id == "m"  # the user asked for this file


async def test_a_replica_named_by_its_holder_never_replaces_a_model_served_here(
        running: trio.Nursery) -> None:
    downloads = Downloads()
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}),
                 Peers(["a"], wb.ModelMeta(id="m")), downloads=downloads,
                 installer=Installer([Entry(id="m", digest=OTHER, size=1)]))
    await running.start(pulls.run)
    with pytest.raises(TransferError, match="serves m from another file"):
        await pulls.start(DIGEST, digest=DIGEST, origin="replication").wait()
    assert not downloads.opened


@pytest.mark.parametrize("name", ["../../etc/passwd", "a//b", "m@1234abcd", "has space",
                                  "sha256:" + "cd" * 32])
async def test_a_holders_name_that_is_no_plain_model_id_is_not_used(
        running: trio.Nursery, name: str) -> None:
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}),
                 Peers(["a"], wb.ModelMeta(id=name)))
    await running.start(pulls.run)
    assert (await pulls.start(DIGEST).wait()).id == f"sha256-{wb.short_digest(DIGEST)}"


async def test_a_user_who_names_the_model_may_replace_its_file(running: trio.Nursery) -> None:
    installer = Installer([Entry(id="m", digest=OTHER, size=1)])
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 installer=installer)
    await running.start(pulls.run)
    assert (await pulls.start(DIGEST, model_id="m").wait()).id == "m"


async def test_a_replica_of_a_model_served_here_from_another_file_is_refused(
        running: trio.Nursery) -> None:
    downloads = Downloads()
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}), Peers(["a"]),
                 downloads=downloads,
                 installer=Installer([Entry(id="m", digest=OTHER, size=1)]))
    await running.start(pulls.run)
    t = pulls.start(DIGEST, digest=DIGEST, model_id="m", origin="replication")
    with pytest.raises(TransferError, match="serves m from another file"):
        await t.wait()
    assert not downloads.opened


async def test_a_holder_naming_no_model_type_is_skipped(running: trio.Nursery) -> None:
    pulls = make(Finder({DIGEST: [Holder(peer_id="a", digest=DIGEST)]}),
                 Peers(["a"], wb.ModelMeta(id="m", type="virus")))
    await running.start(pulls.run)
    with pytest.raises(NoSource) as caught:
        await pulls.start(DIGEST).wait()
    assert "virus" in caught.value.reasons["a"]


async def test_a_urls_credentials_stay_out_of_the_listing_and_the_stored_source(
        running: trio.Nursery) -> None:
    installer = Installer()
    pulls = make(installer=installer)
    await running.start(pulls.run)
    t = pulls.start("https://me:pw@files.example/m.gguf?token=s3cret")
    entry = await t.wait()
    assert t.shown == "https://files.example/m.gguf" and "s3cret" not in entry.id
    assert installer.installed[0][2] == "https://files.example/m.gguf"


class PoisoningPeers(Peers):
    """``liar`` describes the right digest with false chunk digests."""

    def __init__(self, holding: list[str], liar: str) -> None:
        super().__init__(holding)
        self.liar = liar

    async def describe(self, peer_id: str, ref: str) -> tuple[wb.Manifest, wb.ModelMeta | None]:
        manifest, meta = await super().describe(peer_id, ref)
        if peer_id == self.liar:
            manifest = wb.Manifest(digest=manifest.digest, size=manifest.size,
                                   chunk_bytes=manifest.chunk_bytes,
                                   chunks=tuple(bytes(32) for _ in manifest.chunks))
        return manifest, meta


@pytest.mark.parametrize("liar", ["a", "b", "c"])
async def test_a_holder_whose_manifest_lies_is_outvoted_and_left_out(
        running: trio.Nursery, liar: str) -> None:
    holders = [Holder(peer_id=p, model_id="m", digest=DIGEST) for p in "abc"]
    downloads = Downloads()
    pulls = make(Finder({DIGEST: holders}), PoisoningPeers(["a", "b", "c"], liar),
                 downloads=downloads)
    await running.start(pulls.run)
    await pulls.start(DIGEST).wait()
    plan = downloads.opened[0].plan
    assert plan.manifest == MANIFEST  # the majority's, whoever answered first
    assert sorted(s.label for s in plan.sources) == sorted(set("abc") - {liar})


class SilentPeers(Peers):
    async def describe(self, peer_id: str, ref: str) -> tuple[wb.Manifest, wb.ModelMeta | None]:
        if peer_id == "silent":
            await trio.sleep_forever()
        return await super().describe(peer_id, ref)


async def test_a_silent_holder_does_not_hold_up_the_others(
        autojump_clock: trio.testing.MockClock) -> None:
    from peerllm.mesh.describing import AGREE_GRACE_S, describe_holders

    holders = [Holder(peer_id=p, model_id="m", digest=DIGEST) for p in ("silent", "a", "b")]
    started = trio.current_time()
    manifest, _, reasons = await describe_holders(SilentPeers(["silent", "a", "b"]),
                                                  holders, DIGEST)
    assert manifest == MANIFEST
    assert reasons == {}  # still a source: the download judges it by its chunks
    assert trio.current_time() - started == pytest.approx(AGREE_GRACE_S)


async def test_when_every_holder_is_silent_each_is_given_its_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    from peerllm.mesh.describing import DESCRIBE_TIMEOUT_S, describe_holders

    started = trio.current_time()
    manifest, meta, reasons = await describe_holders(
        SilentPeers(["silent"]), [Holder(peer_id="silent", model_id="m", digest=DIGEST)],
        DIGEST)
    assert (manifest, meta) == (None, None)
    assert reasons == {"silent": f"stalled: no answer within {DESCRIBE_TIMEOUT_S:g} s"}
    assert trio.current_time() - started == pytest.approx(DESCRIBE_TIMEOUT_S)
