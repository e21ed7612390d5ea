"""/peerllm/blob between two real libp2p hosts on 127.0.0.1: describe and fetch over the
TLS side channel and in-stream, a refused peer, busy past the per-peer limit, hostile refs
on a raw stream, and a catalog file whose bytes differ from its manifest (delivered as
they are: the download engine is the one that checks)."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from peerllm.errors import SourceFailed
from peerllm.p2p.blob import BlobClient, BlobEntry, BlobServer
from peerllm.p2p.host import P2PHost, open_host
from peerllm.p2p.sidechannel import connection_ip
from peerllm.p2p.streams import receive_event
from peerllm.testing import StaticBlobCatalog, blob_entry, make_identity
from peerllm.wire import blob as wb
from peerllm.wire.framing import encode_frame
from tests.helpers import free_port

CHUNK = 1024 * 1024
MODEL = "tiny"


@asynccontextmanager
async def host_pair(entries: list[BlobEntry], *, side_host: str | None = "127.0.0.1",
                    allowed: bool = True, per_peer: int = 4
                    ) -> AsyncIterator[tuple[P2PHost, P2PHost, BlobClient, BlobServer]]:
    """(A, B, B's client, A's server): A serves ``entries``; B is connected to A."""
    async with open_host(make_identity("a"), listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"]
                         ) as a, \
            open_host(make_identity("b"), listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"]) as b:
        server = BlobServer(catalog=StaticBlobCatalog(entries),
                            may_download=lambda peer: allowed and peer == b.peer_id,
                            max_streams_per_peer=per_peer, upload_limit_bps=None,
                            side_channel=side_host is not None, side_channel_host=side_host,
                            self_peer_id=a.peer_id)
        a.set_handler(wb.PROTOCOL_ID, server.handle)
        await b.connect(a.peer_id, a.addrs())
        client = BlobClient(b, side_channel=True, peer_ip=functools.partial(connection_ip, b))
        yield a, b, client, server


def model_file(tmp_path: Path, size: int = 5 * CHUNK + 4321) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(os.urandom(size))
    return path


async def fetch_all(client: BlobClient, peer: str, ref: str) -> tuple[wb.Manifest, bytes]:
    source = client.source(peer, ref)
    manifest = await source.manifest()
    parts: list[bytes] = []

    async def deliver(index: int, data: bytes) -> None:
        assert index == len(parts)
        parts.append(data)

    await source.fetch(0, manifest.count, chunk_bytes=manifest.chunk_bytes, size=manifest.size,
                       deliver=deliver)
    return manifest, b"".join(parts)


@pytest.mark.parametrize(("side_host", "path"), [
    ("127.0.0.1", "side_channel"), ("0.0.0.0", "side_channel"), (None, "in_stream")])
async def test_describe_and_fetch(tmp_path: Path, side_host: str | None, path: str) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, model_id=MODEL, chunk_bytes=CHUNK)
    async with host_pair([entry], side_host=side_host) as (a, _, client, server):
        manifest, meta = await client.describe(a.peer_id, MODEL)
        assert manifest == entry.manifest and meta == wb.ModelMeta(id=MODEL)
        got_manifest, data = await fetch_all(client, a.peer_id, MODEL)
        assert got_manifest == manifest and data == file.read_bytes()
        assert server.statistics()[path] == 1


async def test_a_refused_peer_gets_refused(tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    async with host_pair([entry], allowed=False) as (a, _, client, _):
        with pytest.raises(SourceFailed) as info:
            await client.describe(a.peer_id, entry.manifest.digest)
        assert (info.value.source, info.value.fault) == (a.peer_id, "refused")


async def test_busy_over_the_per_peer_limit(tmp_path: Path) -> None:
    entry = blob_entry(model_file(tmp_path), chunk_bytes=CHUNK)
    m = entry.manifest
    async with host_pair([entry], per_peer=1, side_host=None) as (a, _, client, _):
        first = trio.Event()
        release = trio.Event()

        async def slow(index: int, data: bytes) -> None:
            first.set()
            await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(
                client.source(a.peer_id, m.digest).fetch, 0, m.count, chunk_bytes=CHUNK,
                size=m.size, deliver=slow))
            await first.wait()
            with pytest.raises(SourceFailed) as info:
                await client.describe(a.peer_id, m.digest)
            assert info.value.fault == "busy" and info.value.retry_after_s
            release.set()


@pytest.mark.parametrize("ref", ["../../../etc/passwd", "/etc/passwd", "tiny/../../x"])
async def test_path_traversal_refs_are_refused_and_the_node_keeps_serving(
        tmp_path: Path, ref: str) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, model_id=MODEL, chunk_bytes=CHUNK)
    async with host_pair([entry]) as (a, b, client, server):
        stream = await b.open_stream(a.peer_id, wb.PROTOCOL_ID)
        await stream.send_all(encode_frame({"v": 1, "t": "describe", "ref": ref}))
        decoder = wb.AnswerDecoder()
        answer = await receive_event(stream, decoder.feed, decoder.next_event)
        assert isinstance(answer, wb.Error) and answer.code == "bad_request"
        assert "ref" in answer.message
        await stream.reset()
        assert server.statistics()["failed"] == 1
        _, data = await fetch_all(client, a.peer_id, MODEL)
        assert data == file.read_bytes()


@pytest.mark.parametrize("side_host", ["127.0.0.1", None])
async def test_a_corrupted_file_is_delivered_as_it_is(tmp_path: Path, side_host: str | None
                                                      ) -> None:
    file = model_file(tmp_path)
    entry = blob_entry(file, chunk_bytes=CHUNK)
    with file.open("r+b") as f:  # same size, different bytes in chunk 2
        f.seek(2 * CHUNK + 10)
        f.write(b"not the model")
    async with host_pair([entry], side_host=side_host) as (a, _, client, _):
        manifest, data = await fetch_all(client, a.peer_id, entry.manifest.digest)
        assert data == file.read_bytes()
        bad = [i for i in range(manifest.count)
               if not manifest.check_chunk(i, data[i * CHUNK:(i + 1) * CHUNK])]
        assert bad == [2]
