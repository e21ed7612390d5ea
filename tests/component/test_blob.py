"""BlobServer and BlobClient over in-memory streams (the side channel over loopback TLS):
describe and fetch both ways, refusals as error frames, per-peer limits, the upload cap,
hostile clients, files that change under the server, and paths only from the catalog.

Real time, not autojump_clock: the server reads files in worker threads.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from peerllm.errors import LocalProtocolError, PeerTimeout, SourceFailed
from peerllm.p2p import blob as pblob
from peerllm.p2p.blob import BlobClient, BlobEntry, BlobServer
from peerllm.p2p.streams import ByteStream, receive_event, safe_handler
from peerllm.testing import StaticBlobCatalog, blob_entry, memory_peer_pair, open_memory_network
from peerllm.wire import blob as wb
from peerllm.wire.framing import encode_frame

SRV, CLI = "srv", "cli"
CHUNK = wb.MIN_CHUNK_BYTES
MODEL = "org/tiny-model"


def model_file(tmp_path: Path, size: int = 3 * CHUNK + 1234, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


class Received:
    """A deliver callback that keeps what it got; ``gate`` holds each delivery."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytes]] = []
        self.gate = trio.Event()
        self.gate.set()
        self.first = trio.Event()

    async def __call__(self, index: int, data: bytes) -> None:
        self.first.set()
        await self.gate.wait()
        self.chunks.append((index, data))

    def joined(self) -> bytes:
        return b"".join(d for _, d in self.chunks)


@asynccontextmanager
async def serving(entries: list[BlobEntry], *, allowed: bool = True, side_host: str | None = None,
                  client_side: bool = True, conn_ip: str | None = None, **kw: Any
                  ) -> AsyncIterator[tuple[BlobClient, BlobServer, StaticBlobCatalog]]:
    catalog = StaticBlobCatalog(entries)
    kw.setdefault("max_streams_per_peer", 4)
    server = BlobServer(catalog=catalog, may_download=lambda peer: allowed and peer == CLI,
                        upload_limit_bps=kw.pop("upload_limit_bps", None),
                        side_channel=side_host is not None, side_channel_host=side_host,
                        self_peer_id=SRV, **kw)
    async with open_memory_network() as net:
        net.serve(SRV, wb.PROTOCOL_ID, server.handle)
        peer_ip = None if conn_ip is None else (lambda peer: conn_ip)
        yield (BlobClient(net.opener(CLI), side_channel=client_side, peer_ip=peer_ip),
               server, catalog)


async def fetch_all(client: BlobClient, ref: str, entry: BlobEntry,
                    got: Callable[[int, bytes], Awaitable[None]],
                    first: int = 0, count: int | None = None) -> None:
    m = entry.manifest
    await client.source(SRV, ref).fetch(first, m.count - first if count is None else count,
                                        chunk_bytes=m.chunk_bytes, size=m.size, deliver=got)


async def test_describe_by_digest_and_by_model_id(tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), model_id=MODEL, chunk_bytes=CHUNK)
    async with serving([entry]) as (client, _, _):
        for ref in (entry.manifest.digest, MODEL):
            manifest, meta = await client.describe(SRV, ref)
            assert manifest == entry.manifest
            assert meta == wb.ModelMeta(id=MODEL)


@pytest.mark.parametrize(("side_host", "client_side", "path"), [
    (None, True, "in_stream"),            # the server offers no side channel
    ("127.0.0.1", False, "in_stream"),    # the client does not want one
    ("127.0.0.1", True, "side_channel"),  # both: TLS on loopback
    ("0.0.0.0", True, "in_stream"),       # offered as "", and the client cannot tell the IP
])
async def test_fetch_delivers_every_chunk_in_order(tmp_path: Path, side_host: str | None,
                                                   client_side: bool, path: str) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, chunk_bytes=CHUNK)
    async with serving([entry], side_host=side_host, client_side=client_side
                       ) as (client, server, _):
        got = Received()
        await fetch_all(client, entry.manifest.digest, entry, got)
        assert got.joined() == file.read_bytes()
        assert [i for i, _ in got.chunks] == list(range(entry.manifest.count))
        stats = server.statistics()
        assert stats[path] == 1 and stats["bytes_sent"] == entry.manifest.size
        assert stats["active"] == 0


async def test_a_side_channel_that_cannot_be_dialled_is_not_asked_for_again(
        tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    async with serving([entry], side_host="0.0.0.0") as (client, server, _):
        for _ in range(2):
            await fetch_all(client, entry.manifest.digest, entry, Received())
        stats = server.statistics()
        assert (stats["offers"], stats["in_stream"], stats["side_channel"]) == (1, 2, 0)


async def test_a_peer_that_may_not_download_is_refused(tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    async with serving([entry], allowed=False) as (client, server, catalog):
        with pytest.raises(SourceFailed) as info:
            await client.describe(SRV, entry.manifest.digest)
        assert (info.value.source, info.value.fault) == (SRV, "refused")
        assert server.statistics()["refused"] == 1
        assert catalog.asked == []  # refused before anything was looked up


async def test_unknown_refs_are_not_found_and_bad_refs_never_leave(tmp_path: Path) -> None:
    async with serving([]) as (client, _server, catalog):
        with pytest.raises(SourceFailed) as info:
            await client.describe(SRV, "sha256:" + "0" * 64)
        assert info.value.fault == "not_found"
        with pytest.raises(LocalProtocolError, match="ref"):
            await client.describe(SRV, "../../etc/passwd")
        assert catalog.asked == ["sha256:" + "0" * 64]


async def test_more_streams_than_the_per_peer_limit_are_busy(tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    async with serving([entry], max_streams_per_peer=1) as (client, server, _):
        held = Received()
        held.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_all, client, entry.manifest.digest, entry, held)
            await held.first.wait()  # the first stream is being served
            with pytest.raises(SourceFailed) as info:
                await client.describe(SRV, entry.manifest.digest)
            assert info.value.fault == "busy" and info.value.retry_after_s is not None
            held.gate.set()
        assert server.statistics()["busy"] == 1
        await client.describe(SRV, entry.manifest.digest)  # free again


async def test_chunks_a_downloading_node_lacks_are_not_found(tmp_path: Path) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, chunk_bytes=CHUNK, have=lambda i: i != 2)
    async with serving([entry]) as (client, _, _):
        source = client.source(SRV, entry.manifest.digest)
        await source.manifest()
        assert [source.has(i) for i in range(4)] == [True, True, False, True]
        got = Received()
        await fetch_all(client, entry.manifest.digest, entry, got, 0, 2)
        assert got.joined() == file.read_bytes()[:2 * CHUNK]
        with pytest.raises(SourceFailed, match="chunk 2") as info:
            await fetch_all(client, entry.manifest.digest, entry, Received(), 1, 2)
        assert info.value.fault == "not_found"


async def test_a_file_that_changed_size_is_internal_and_never_served_half(tmp_path: Path
                                                                          ) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, chunk_bytes=CHUNK)
    partial = BlobEntry(manifest=entry.manifest, path=file, have=lambda i: True)
    async with serving([entry]) as (client, server, _):
        with file.open("r+b") as f:
            f.truncate(CHUNK + 100)
        with pytest.raises(SourceFailed, match="cannot be read") as info:
            await fetch_all(client, entry.manifest.digest, entry, Received())
        assert info.value.fault == "gone"
    async with serving([partial]) as (client, server, _):
        got = Received()
        with pytest.raises(SourceFailed, match="changed"):
            await fetch_all(client, entry.manifest.digest, entry, got)
        assert [len(d) for _, d in got.chunks] == [CHUNK]  # chunk 1 was short: not sent
        assert server.statistics()["failed"] == 1


async def test_a_request_whose_geometry_differs_is_a_bad_request(tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    async with serving([entry]) as (client, _, _):
        with pytest.raises(SourceFailed, match="bytes in") as info:
            await client.source(SRV, entry.manifest.digest).fetch(
                0, 1, chunk_bytes=2 * CHUNK, size=entry.manifest.size, deliver=Received())
        assert info.value.fault == "bad_answer"


async def test_the_upload_cap_paces_the_chunks(tmp_path: Path) -> None:
    file = model_file(tmp_path, 12 * CHUNK)
    entry = blob_entry(file, chunk_bytes=CHUNK)
    # bytes/s; the bucket holds one second: 9 chunks go at once (the 9th into debt),
    # the last three wait 1/8 s each.
    rate = 8 * CHUNK
    async with serving([entry], upload_limit_bps=rate) as (client, _, _):
        start = trio.current_time()
        got = Received()
        await fetch_all(client, entry.manifest.digest, entry, got)
        assert got.joined() == file.read_bytes()
        assert trio.current_time() - start >= 3 * CHUNK / rate - 0.01  # a lower bound only


async def raw_exchange(server: BlobServer, frames: bytes) -> list[object]:
    """Send ``frames`` as a client would and collect every answer until the end."""
    ours, theirs = memory_peer_pair(client=CLI, server=SRV)
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pblob_safe_handle, server, theirs)
        await ours.send_all(frames)
        decoder = wb.AnswerDecoder()
        try:
            while (event := await receive_event(ours, decoder.feed, decoder.next_event)
                   ) is not wb.CLOSED:
                answers.append(event)
        except Exception as exc:  # the server reset the stream after its error frame
            answers.append(type(exc).__name__)
    return answers


async def pblob_safe_handle(server: BlobServer, stream: ByteStream) -> None:
    await safe_handler(wb.PROTOCOL_ID, server.handle, timeout_s=10)(stream)


@pytest.mark.parametrize("frame", [
    {"v": 1, "t": "describe", "ref": "../../../etc/passwd"},
    {"v": 1, "t": "describe", "ref": "/etc/passwd"},
    {"v": 1, "t": "get", "ref": "m/../../x", "first": 0, "count": 1, "chunk_bytes": CHUNK,
     "size": 1, "side_channel": False},
    {"v": 1, "t": "get", "ref": "sha256:" + "0" * 64, "first": 0, "count": 10**9,
     "chunk_bytes": CHUNK, "size": 1, "side_channel": False},
    {"v": 1, "t": "offer", "host": "", "port": 1},
    {"v": 9, "t": "describe", "ref": "m"},
])
async def test_hostile_frames_get_an_error_and_the_server_keeps_serving(
        tmp_path: Path, frame: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, model_id="m", chunk_bytes=CHUNK)
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: Any, *args: Any, **kw: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(pblob.os, "open", recording_open)
    async with serving([entry]) as (client, server, catalog):
        answers = await raw_exchange(server, encode_frame(frame, max_frame_bytes=10**6))
        assert isinstance(answers[0], wb.Error) and answers[0].code == "bad_request"
        assert catalog.asked == [] and opened == []
        got = Received()  # the node keeps serving
        await fetch_all(client, "m", entry, got)
        assert got.joined() == file.read_bytes()
        assert opened == [str(file)]  # only ever the catalog's path


async def test_garbage_and_a_stray_fallback_are_refused(tmp_path: Path) -> None:
    async with serving([]) as (_, server, _):
        answers = await raw_exchange(server, b"\x00\x00\x00\x03abc")
        assert isinstance(answers[0], wb.Error) and answers[0].code == "bad_request"
        answers = await raw_exchange(server, wb.encode_request(wb.Fallback()))
        assert isinstance(answers[0], wb.Error) and "fallback" in answers[0].message


async def test_ranges_over_the_protocol_limit_are_split_by_the_client(tmp_path: Path) -> None:
    size = (wb.MAX_RANGE_CHUNKS + 3) * CHUNK
    file = model_file(tmp_path, size)
    entry = blob_entry(file, chunk_bytes=CHUNK)
    async with serving([entry]) as (client, server, _):
        got = Received()
        await fetch_all(client, entry.manifest.digest, entry, got)
        assert got.joined() == file.read_bytes()
        assert server.statistics()["streams"] == 2


class Abort(Exception):
    """The download engine gave up on this source (a bad chunk, say)."""


@pytest.mark.parametrize("side_host", ["127.0.0.1", None])
async def test_a_client_that_gives_up_mid_range_leaves_the_server_serving(
        tmp_path: Path, side_host: str | None) -> None:
    file = model_file(tmp_path, 8 * CHUNK)
    entry = blob_entry(file, chunk_bytes=CHUNK)

    async def refuse(index: int, data: bytes) -> None:
        raise Abort

    async with serving([entry], side_host=side_host) as (client, server, _):
        with pytest.raises(Abort):  # the caller's own error comes back as it is
            await fetch_all(client, entry.manifest.digest, entry, refuse)
        stuck = Received()
        stuck.gate = trio.Event()  # never set: the delivery hangs until cancelled
        with trio.move_on_after(0.5) as scope:
            await fetch_all(client, entry.manifest.digest, entry, stuck)
        assert scope.cancelled_caught
        got = Received()
        await fetch_all(client, entry.manifest.digest, entry, got)
        assert got.joined() == file.read_bytes()
        with trio.fail_after(5):
            while server.statistics()["active"]:
                await trio.sleep(0.01)


class NeverReads:
    """A client that asks for a range, then reads nothing: every send blocks."""

    peer_id = CLI

    def __init__(self, request: bytes) -> None:
        self._request: bytes | None = request

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._request is not None:
            data, self._request = self._request, None
            return data
        await trio.sleep_forever()
        raise AssertionError

    async def send_all(self, data: bytes) -> None:
        await trio.sleep_forever()

    async def aclose(self) -> None:
        pass

    async def reset(self) -> None:
        pass


async def test_a_client_that_stops_reading_times_out_and_frees_its_stream(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    m = entry.manifest
    server = BlobServer(catalog=StaticBlobCatalog([entry]), may_download=lambda peer: True,
                        max_streams_per_peer=1, upload_limit_bps=None, side_channel=False,
                        self_peer_id=SRV)
    get = wb.encode_request(wb.Get(ref=m.digest, first=0, count=m.count,
                                   chunk_bytes=m.chunk_bytes, size=m.size, side_channel=False))
    with pytest.raises(PeerTimeout, match="read none of chunk 0"):
        await server.handle(NeverReads(get))
    assert server.statistics()["active"] == 0


async def test_an_offer_cannot_point_the_dial_away_from_the_connections_ip(
        tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    # The server offers 127.0.0.2; our connection to it (we say) uses 127.0.0.1.
    async with serving([entry], side_host="127.0.0.2", conn_ip="127.0.0.1") \
            as (client, server, _):
        got = Received()
        await fetch_all(client, entry.manifest.digest, entry, got)
        assert got.joined() == entry.path.read_bytes()
        stats = server.statistics()  # .1 has no listener: in-stream instead
        assert (stats["offers"], stats["side_channel"], stats["in_stream"]) == (1, 0, 1)
