"""Downloads from a real HTTP server on 127.0.0.1 with Range support, and hf:// resolution
against it acting as the hub (HF_ENDPOINT): resolve URL, LFS headers, CDN redirect."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trio

from peerllm.errors import DigestMismatch, SourceFailed
from peerllm.testing import write_fake_gguf
from peerllm.transfer.http import HttpSource, resolve_hf
from peerllm.transfer.partial import partial_path, state_path
from peerllm.transfer.swarm import SwarmDownload
from peerllm.wire.blob import DEFAULT_CHUNK_BYTES, manifest_of
from tests.helpers import free_port, wait_until

TOKEN = "hf_secret_token_never_logged"
RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def fake_model(tmp_path: Path, size: int) -> bytes:
    """A valid fake GGUF with random bytes after its header (every chunk differs)."""
    path = write_fake_gguf(tmp_path / "src.gguf", 64)
    head = path.read_bytes()[:64]
    return head + os.urandom(size - len(head))


@dataclass
class Site:
    files: dict[str, bytes]
    ignore_range: bool = False
    need_token: bool = False
    pause_after: int | None = None  # bytes served before the answer blocks on `gate`
    gate: threading.Event = field(default_factory=threading.Event)
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            if site.need_token and self.headers.get("Authorization") != f"Bearer {TOKEN}" \
                    and not self.path.startswith("/cdn/"):
                self._empty(401)
                return
            hub = re.fullmatch(r"/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", self.path)
            if hub is not None:
                name = hub.group(4)
                if name not in site.files:
                    self._empty(404)
                    return
                data = site.files[name]
                self.send_response(302)
                self.send_header("Location", f"{site.url}/cdn/{name}")
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = site.files.get(self.path.removeprefix("/cdn/").lstrip("/"))
            if data is None:
                self._empty(404)
                return
            self._send(data, body=body)

        def _send(self, data: bytes, *, body: bool) -> None:
            asked = self.headers.get("Range")
            if body:
                site.ranges.append(asked)
            match = RANGE.fullmatch(asked) if asked and not site.ignore_range else None
            start, end = 0, len(data) - 1
            if match is not None:
                start = int(match.group(1))
                end = min(int(match.group(2) or end), end)
                if start >= len(data):
                    self._empty(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if not body:
                return
            view = memoryview(data)[start:end + 1]
            try:
                if site.pause_after is not None and len(view) > site.pause_after:
                    self.wfile.write(view[:site.pause_after])
                    self.wfile.flush()
                    site.gate.wait(30)
                    view = view[site.pause_after:]
                self.wfile.write(view)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (cancelled)

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve(site: Site) -> Iterator[Site]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(site))
    server.daemon_threads = True
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def big_disk(_: Path) -> int:
    return 1 << 40


async def test_a_url_downloads_and_resumes_with_range(tmp_path: Path) -> None:
    data = fake_model(tmp_path, 3 * DEFAULT_CHUNK_BYTES + 1000)
    digest = manifest_of(data).digest
    target = tmp_path / "blobs" / "m.gguf"
    with serve(Site({"m.gguf": data}, pause_after=DEFAULT_CHUNK_BYTES)) as site:
        async with httpx.AsyncClient() as client:
            first = SwarmDownload(target=target, expected_digest=digest, free_bytes=big_disk,
                                  sources=[HttpSource(f"{site.url}/m.gguf", client=client)])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first.run)
                await wait_until(lambda: first.progress().completed >= DEFAULT_CHUNK_BYTES,
                                 what="the first chunk on disk")
                nursery.cancel_scope.cancel()
            assert not target.exists() and partial_path(target).exists()
            site.gate.set()
            site.pause_after = None
            site.ranges.clear()
            again = SwarmDownload(target=target, expected_digest=digest, free_bytes=big_disk,
                                  sources=[HttpSource(f"{site.url}/m.gguf", client=client)])
            manifest = await again.run()
    assert target.read_bytes() == data and manifest == manifest_of(data)
    assert site.ranges and site.ranges[0].startswith(f"bytes={DEFAULT_CHUNK_BYTES}-")
    assert again.progress().resumed == DEFAULT_CHUNK_BYTES


CHILD = """
import sys, httpx, trio
from pathlib import Path
from peerllm.transfer.http import HttpSource
from peerllm.transfer.swarm import SwarmDownload

async def main() -> None:
    async with httpx.AsyncClient() as client:
        await SwarmDownload(target=Path(sys.argv[2]), expected_digest=sys.argv[3],
                            sources=[HttpSource(sys.argv[1], client=client)]).run()

trio.run(main)
"""


async def test_a_download_killed_with_sigkill_resumes_where_it_was(tmp_path: Path) -> None:
    data = fake_model(tmp_path, 4 * DEFAULT_CHUNK_BYTES + 3)
    digest = manifest_of(data).digest
    target = tmp_path / "blobs" / "m.gguf"
    target.parent.mkdir()
    site = Site({"m.gguf": data}, pause_after=2 * DEFAULT_CHUNK_BYTES + 1000)
    with serve(site):
        child = await trio.lowlevel.open_process(
            [sys.executable, "-c", CHILD, f"{site.url}/m.gguf", str(target), digest],
            env=dict(os.environ))
        try:
            await wait_until(lambda: _records(target) >= 2, what="two chunks logged")
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        site.gate.set()
        site.pause_after = None
        site.ranges.clear()
        async with httpx.AsyncClient() as client:
            again = SwarmDownload(target=target, expected_digest=digest, free_bytes=big_disk,
                                  sources=[HttpSource(f"{site.url}/m.gguf", client=client)])
            await again.run()
    assert target.read_bytes() == data
    assert site.ranges == [f"bytes={2 * DEFAULT_CHUNK_BYTES}-{len(data) - 1}"]
    assert again.progress().resumed == 2 * DEFAULT_CHUNK_BYTES


def _records(target: Path) -> int:
    try:
        raw = state_path(target).read_bytes()
    except FileNotFoundError:
        return 0
    return raw.count(b"\n") - 1


async def test_a_server_ignoring_range_serves_from_the_start(tmp_path: Path) -> None:
    data = fake_model(tmp_path, 2 * DEFAULT_CHUNK_BYTES + 5)
    target = tmp_path / "m.gguf"
    with serve(Site({"m.gguf": data}, ignore_range=True)) as site:
        async with httpx.AsyncClient() as client:
            source = HttpSource(f"{site.url}/m.gguf", client=client)
            with pytest.raises(SourceFailed) as info:
                await source.fetch(1, 1, chunk_bytes=DEFAULT_CHUNK_BYTES, size=len(data),
                                   deliver=_ignore)
            assert info.value.fault == "refused"
            await SwarmDownload(target=target, expected_digest=manifest_of(data).digest,
                                sources=[source], free_bytes=big_disk).run()
    assert target.read_bytes() == data


async def _ignore(index: int, data: bytes) -> None:
    await trio.lowlevel.checkpoint()


async def test_a_wrong_file_from_a_url_is_not_installed(tmp_path: Path) -> None:
    data = fake_model(tmp_path, 1000)
    target = tmp_path / "m.gguf"
    with serve(Site({"m.gguf": data})) as site:
        async with httpx.AsyncClient() as client:
            dl = SwarmDownload(target=target, expected_digest="sha256:" + "1" * 64,
                               sources=[HttpSource(f"{site.url}/m.gguf", client=client)],
                               free_bytes=big_disk)
            with pytest.raises(DigestMismatch):
                await dl.run()
    assert not target.exists() and not partial_path(target).exists()


async def test_missing_files_and_refusals_name_the_fault(tmp_path: Path) -> None:
    with serve(Site({"m.gguf": b"x" * 100}, need_token=True)) as site:
        async with httpx.AsyncClient() as client:
            for source, fault in ((HttpSource(f"{site.url}/m.gguf", client=client), "refused"),
                                  (HttpSource(f"{site.url}/m.gguf", client=client,
                                              token="wrong-" + TOKEN), "refused"),
                                  (HttpSource(f"{site.url}/no.gguf", client=client,
                                              token=TOKEN), "not_found")):
                with pytest.raises(SourceFailed) as info:
                    await source.fetch(0, 1, chunk_bytes=DEFAULT_CHUNK_BYTES, size=100,
                                       deliver=_ignore)
                assert info.value.fault == fault and TOKEN not in str(info.value)
            with pytest.raises(SourceFailed) as info:
                await HttpSource(f"{site.url}/m.gguf", client=client, token=TOKEN).fetch(
                    3, 1, chunk_bytes=DEFAULT_CHUNK_BYTES, size=4 * DEFAULT_CHUNK_BYTES,
                    deliver=_ignore)
            assert info.value.fault == "bad_answer" and "416" in str(info.value)


async def test_hf_refs_resolve_on_the_hub_and_download(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    data = fake_model(tmp_path, DEFAULT_CHUNK_BYTES + 77)
    target = tmp_path / "m.gguf"
    with serve(Site({"model-Q4_K_M.gguf": data}, need_token=True)) as site:
        async with httpx.AsyncClient() as client:
            hub = await resolve_hf("hf://someone/some-model-GGUF/model-Q4_K_M.gguf",
                                   endpoint=site.url, token=TOKEN, client=client)
            assert hub.url == f"{site.url}/someone/some-model-GGUF/resolve/main/" \
                              "model-Q4_K_M.gguf"
            assert hub.digest == manifest_of(data).digest and hub.size == len(data)
            assert hub.filename == "model-Q4_K_M.gguf"
            await SwarmDownload(target=target, expected_digest=hub.digest, size=hub.size,
                                sources=[], fallback=[HttpSource(hub.url, client=client,
                                                                 token=TOKEN)],
                                free_bytes=big_disk).run()
            with pytest.raises(SourceFailed) as info:
                await resolve_hf("hf://someone/some-model-GGUF/model-Q4_K_M.gguf@v2",
                                 endpoint=site.url, token=None, client=client)
            assert info.value.fault == "refused"
            with pytest.raises(SourceFailed) as missing:
                await resolve_hf("hf://someone/some-model-GGUF/other.gguf", endpoint=site.url,
                                 token=TOKEN, client=client)
            assert missing.value.fault == "not_found"
    assert target.read_bytes() == data
    assert TOKEN not in caplog.text
