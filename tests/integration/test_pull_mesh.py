"""Getting models between real nodes (FakeBackend, a fake GGUF of a few MiB): a node
without the model pulls it from a peer by id and serves it itself; the official
``ollama`` client's pull shows progress; the transfers list; bad bodies; roles."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
import trio
from click.testing import CliRunner

import peerllm
from peerllm.api import open_api
from peerllm.cli import cli
from peerllm.client import NodeClient
from peerllm.errors import NodeApiError
from peerllm.testing import FakeBackend, write_fake_gguf
from peerllm.transfer.digests import DigestCache
from peerllm.wire import blob as wb
from tests.helpers import FAKE_MODEL, MakeConfig, free_port, wait_until, with_fake_model

FILE_BYTES = 3 * 1024 * 1024 + 12345  # a short last chunk


def holder_config(make_config: MakeConfig, name: str, **auth: Any) -> tuple[Any, str]:
    """A node serving FAKE_MODEL from a few-MiB file whose manifest is cached (as the
    background digest task leaves it); returns (config, the file's sha256)."""
    cfg = with_fake_model(make_config(name), auth=auth or None)
    path = Path(cfg.models.paths[0])
    write_fake_gguf(path, FILE_BYTES)
    DigestCache().manifest(path)
    return cfg, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@asynccontextmanager
async def pair(make_config: MakeConfig) -> AsyncIterator[tuple[peerllm.Node, peerllm.Node,
                                                               str, str]]:
    """(a holding the model, b without it, b's API URL, the file's digest)."""
    cfg, digest = holder_config(make_config, "holder")
    async with peerllm.open_node(cfg, backend=FakeBackend(tokens=["hi"])) as a, \
            peerllm.open_node(make_config("puller", bootstrap=[a.addrs()[0]]),
                              backend=FakeBackend(tokens=["hi"])) as b, \
            open_api(b) as url:
        await wait_until(lambda: [m.digest for m in a.model_statuses()] == [digest],
                         what="a's digest task to hash its file")
        await wait_until(lambda: FAKE_MODEL in b.mesh_models(), what="b to see a's model")
        yield a, b, url, digest


async def test_a_node_pulls_a_peers_model_by_id_and_serves_it(make_config: MakeConfig
                                                              ) -> None:
    async with pair(make_config) as (a, b, url, digest), NodeClient(url) as client:
        events = [e async for e in client.pull(FAKE_MODEL)]
        assert events[-1]["status"] == "success" and events[-1]["digest"] == digest
        assert events[-1]["model"] == FAKE_MODEL
        assert b.engine is not None and FAKE_MODEL in b.model_ids()
        assert b.store is not None
        blob = b.store.blob_path(digest)
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest.split(":")[1]
        stored = b.store.get(FAKE_MODEL)
        assert stored is not None and stored.source == f"peer:{a.peer_id}"
        rows = await client.transfers()
        assert [(r["ref"], r["state"], r["digest"]) for r in rows] == [
            (FAKE_MODEL, "done", digest)]
        assert [s["label"] for s in rows[0]["sources"]] == [a.peer_id]
        # A's status counts what it uploaded: the whole file, once.
        uploads = a.status()["uploads"]
        assert uploads["bytes_sent"] == blob.stat().st_size, uploads
        # B serves it now: loaded here (and not on A), B is where a request goes.
        await b.engine.registry.load(FAKE_MODEL)
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
            resp = await http.post("/v1/chat/completions", json={
                "model": FAKE_MODEL, "messages": [{"role": "user", "content": "x"}]})
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-peerllm-served-by"] == b.peer_id
            # Pulling it again is done at once.
            again = await http.post("/api/pull", json={"model": FAKE_MODEL, "stream": False})
            assert again.status_code == 200 and again.json() == {"status": "success"}


async def test_the_official_ollama_client_pulls_with_progress(make_config: MakeConfig
                                                              ) -> None:
    async with pair(make_config) as (_, b, url, digest):
        def pull() -> list[Any]:
            with ollama.Client(host=url) as client:
                return list(client.pull(FAKE_MODEL, stream=True))

        parts = await trio.to_thread.run_sync(pull)
        statuses = [p.status for p in parts]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
        pulling = [p for p in parts if p.digest == digest]
        assert pulling and pulling[-1].completed == pulling[-1].total == FILE_BYTES
        assert FAKE_MODEL in b.model_ids()

        def missing() -> None:
            with ollama.Client(host=url) as client:
                list(client.pull("no-such-model", stream=True))

        with pytest.raises(ollama.ResponseError) as info:
            await trio.to_thread.run_sync(missing)
        assert info.value.status_code == 404 and "no-such-model" in info.value.error


async def test_bad_pull_bodies_name_the_field(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("lonely")) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False) as http:
        for path, body, field in [("/api/pull", {}, "model"),
                                  ("/api/pull", {"model": "m", "stream": 1}, "stream"),
                                  ("/v1/models/pull", {"model": ["x"]}, "model"),
                                  ("/v1/models/pull", {"model": "m", "digest": 5}, "digest")]:
            resp = await http.post(path, json=body)
            assert resp.status_code == 400, (path, body, resp.text)
            err = resp.json()["error"]
            message = err if path.startswith("/api/") else err["message"]
            assert message.startswith(f"{field}: "), (path, message)
        nobody = f"http://127.0.0.1:{free_port()}/m.gguf"
        url_pull = await http.post("/v1/models/pull", json={"model": nobody})
        assert url_pull.status_code == 502, url_pull.text
        assert "http://127.0.0.1" in url_pull.json()["error"]["message"]
        assert (await http.get("/v1/transfers")).json()["transfers"][0]["state"] == "failed"


@contextmanager
def file_server(root: Path) -> Iterator[str]:
    """A plain HTTP server of ``root`` (no Range support) on 127.0.0.1."""
    handler = functools.partial(QuietFiles, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_a_model_is_pulled_from_a_url_and_checked_against_its_digest(
        make_config: MakeConfig, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    write_fake_gguf(files / "tiny-q4.gguf", FILE_BYTES)
    digest = "sha256:" + hashlib.sha256((files / "tiny-q4.gguf").read_bytes()).hexdigest()
    async with peerllm.open_node(make_config("fetcher"), backend=FakeBackend()) as node, \
            open_api(node) as url, NodeClient(url) as client:
        with file_server(files) as site, pytest.raises(NodeApiError, match="expected sha256:0"):
            async for _ in client.pull(f"{site}/tiny-q4.gguf", digest="sha256:" + "0" * 64):
                pass
        assert node.model_ids() == []
        rows = await client.transfers()
        assert rows[0]["state"] == "failed" and "digest" in rows[0]["error"]
        with file_server(files) as site:
            events = [e async for e in client.pull(f"{site}/tiny-q4.gguf", digest=digest)]
        assert events[-1]["status"] == "success" and events[-1]["digest"] == digest
        assert node.model_ids() == ["tiny-q4"]
        assert node.store is not None
        stored = node.store.get("tiny-q4")
        assert stored is not None and stored.source == f"{site}/tiny-q4.gguf"


async def test_a_model_pulled_by_digest_is_served_again_after_a_restart(
        make_config: MakeConfig) -> None:
    async with pair(make_config) as (a, b, url, digest), NodeClient(url) as client:
        def lists_digest() -> bool:
            entry = b.registry.get(a.peer_id)
            return entry is not None and entry.info is not None \
                and any(m.digest == digest for m in entry.info.models)

        await wait_until(lists_digest, what="a's node-info to carry the file's digest")
        assert [e async for e in client.pull(digest)][-1]["status"] == "success"
        assert FAKE_MODEL in b.model_ids()
    async with peerllm.open_node(make_config("puller"), backend=FakeBackend()) as again:
        assert again.model_ids() == [FAKE_MODEL]
        assert again.engine is not None
        assert again.engine.registry.spec(FAKE_MODEL).digest == digest


async def test_delete_removes_a_pulled_model_and_its_file(make_config: MakeConfig) -> None:
    async with pair(make_config) as (_, b, url, digest), NodeClient(url) as client:
        assert [e async for e in client.pull(FAKE_MODEL)][-1]["status"] == "success"
        assert b.store is not None
        blob = b.store.blob_path(digest)
        assert blob.is_file()

        def delete() -> bool:
            with ollama.Client(host=url) as ollama_client:
                return ollama_client.delete(FAKE_MODEL).status == "success"

        assert await trio.to_thread.run_sync(delete)
        assert FAKE_MODEL not in b.model_ids() and not blob.exists()
        assert b.store.get(FAKE_MODEL) is None
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            gone = await http.request("DELETE", "/api/delete", json={"model": FAKE_MODEL})
            assert gone.status_code == 404 and FAKE_MODEL in gone.json()["error"]
            bad = await http.request("DELETE", "/api/delete", params={"cancel": "maybe"},
                                     json={"model": FAKE_MODEL})
            assert bad.status_code == 400 and bad.json()["error"].startswith("cancel: ")


async def test_delete_unregisters_a_model_file_it_was_given_and_keeps_the_file(
        make_config: MakeConfig) -> None:
    cfg, _ = holder_config(make_config, "given")
    path = Path(cfg.models.paths[0])
    async with peerllm.open_node(cfg, backend=FakeBackend()) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        resp = await http.request("DELETE", "/api/delete",
                                  params={"cancel": "true"}, json={"name": FAKE_MODEL})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"status": "success", "file_deleted": False}
        assert node.model_ids() == [] and await trio.Path(path).is_file()


async def test_peerllm_pull_and_models_against_a_node(make_config: MakeConfig) -> None:
    async with pair(make_config) as (_, _, url, digest):
        def run(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(cli, [*args, "--api", url], env={"PEERLLM_API": None})
            return result.exit_code, result.stdout

        code, out = await trio.to_thread.run_sync(run, "pull", FAKE_MODEL)
        assert code == 0, out
        assert f"{FAKE_MODEL} is ready ({digest})" in out
        code, out = await trio.to_thread.run_sync(run, "models")
        assert code == 0
        row = next(line for line in out.splitlines() if line.strip("│┃ ").startswith(FAKE_MODEL))
        assert wb.short_digest(digest) in row and "3.0 MiB" in row
        assert "puller (local)" in row and "holder" in row
