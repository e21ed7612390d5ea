"""The pull routes over a Pulls service on fakes: Ollama's NDJSON phases, our SSE events,
errors with their statuses, bad bodies naming the field, and the transfers list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import trio
from starlette.applications import Starlette

from peerllm.api.pulls import OllamaPhases, routes
from peerllm.audit import NULL_AUDIT
from peerllm.auth import Authority
from peerllm.config import AuthConfig
from peerllm.errors import NoSource, NotEnoughSpace
from peerllm.mesh.pull_ports import Holder
from peerllm.mesh.pulls import Pulls
from peerllm.transfer.ports import Progress
from peerllm.wire import blob as wb
from tests.unit.mesh.pull_fakes import MANIFEST, Downloads, Finder, Hub, Installer, Peers

DIGEST = MANIFEST.digest
HOLDERS = {"m": [Holder(peer_id="a", model_id="m", digest=DIGEST)]}


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    pulls = Pulls(finder=Finder(HOLDERS), peers=Peers(["a"], wb.ModelMeta(id="m")),
                  hub=Hub(), open_download=Downloads(), installer=Installer())
    node = SimpleNamespace(pulls=pulls, audit=NULL_AUDIT,
                           authority=Authority(data_dir=tmp_path, config=AuthConfig()))
    app = Starlette(routes=routes(cast(Any, node)))
    async with trio.open_nursery() as nursery:
        await nursery.start(pulls.run)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://node") as client:
            yield client
        nursery.cancel_scope.cancel()


def ndjson(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in resp.text.splitlines() if line]


async def test_ollama_pull_streams_its_phases_in_order(http: httpx.AsyncClient) -> None:
    resp = await http.post("/api/pull", json={"model": "m"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(resp)
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    pulling = [line for line in lines if line["status"] == f"pulling {DIGEST[7:19]}"]
    assert pulling and pulling[-1]["digest"] == DIGEST
    assert pulling[-1]["completed"] == pulling[-1]["total"] == MANIFEST.size


async def test_ollama_pull_without_stream_is_one_object(http: httpx.AsyncClient) -> None:
    resp = await http.post("/api/pull", json={"name": "m", "stream": False})
    assert resp.status_code == 200 and resp.json() == {"status": "success"}


async def test_an_unknown_model_is_a_404_in_ollamas_shape(http: httpx.AsyncClient) -> None:
    resp = await http.post("/api/pull", json={"model": "nosuch"})
    assert resp.status_code == 404
    assert "nosuch" in resp.json()["error"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "model"), ({"model": 3}, "model"), ({"model": " "}, "model"),
    ({"model": "m", "stream": "yes"}, "stream"), ({"model": "m", "insecure": 1}, "insecure"),
    ({"model": "a" * 3000}, "model")])
async def test_bad_bodies_are_400_naming_the_field(http: httpx.AsyncClient,
                                                  body: dict[str, Any], field: str) -> None:
    resp = await http.post("/api/pull", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(f"{field}: ")


async def test_our_pull_streams_sse_events_and_done(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/models/pull", json={"model": "m"})
    assert resp.status_code == 200
    events = [line[len("data: "):] for line in resp.text.splitlines()
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    docs = [json.loads(e) for e in events[:-1]]
    assert docs[-1]["status"] == "success" and docs[-1]["state"] == "done"
    assert docs[-1]["model"] == "m" and docs[-1]["digest"] == DIGEST


async def test_our_pull_bad_digest_is_a_400(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/models/pull", json={"model": "m", "digest": "sha256:zz"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "digest"


async def test_transfers_lists_the_finished_pull(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/models/pull", json={"model": "m", "stream": False})
    assert resp.status_code == 200 and resp.json()["state"] == "done"
    rows = (await http.get("/v1/transfers")).json()["transfers"]
    assert [(r["ref"], r["state"], r["digest"], r["origin"]) for r in rows] == [
        ("m", "done", DIGEST, "user")]


def test_errors_map_to_statuses() -> None:
    from peerllm.api.pulls import transfer_error

    assert transfer_error(NotEnoughSpace(Path("/x/y"), 10, 1)).status == 507
    assert transfer_error(NoSource("none")).status == 404
    failed = transfer_error(NoSource("all failed", reasons={"peer-a": "bad_chunk"}))
    assert failed.status == 502 and "peer-a: bad_chunk" in failed.message


def test_phases_are_each_said_once_even_when_updates_are_skipped() -> None:
    phases = OllamaPhases()
    first = phases.lines(Progress(digest=None, state="resolving", total=None, completed=0))
    last = phases.lines(Progress(digest=DIGEST, state="done", total=9, completed=9))
    assert [x["status"] for x in first + last] == [
        "pulling manifest", f"pulling {DIGEST[7:19]}", "verifying sha256 digest",
        "writing manifest", "success"]
    assert phases.lines(Progress(digest=DIGEST, state="failed", total=9, completed=1,
                                 error="boom")) == [{"error": "boom"}]


async def test_transfers_shows_a_pull_in_flight_with_its_sources(tmp_path: Path) -> None:
    gate = trio.Event()
    pulls = Pulls(finder=Finder(HOLDERS), peers=Peers(["a"]), hub=Hub(),
                  open_download=Downloads(gate=gate), installer=Installer())
    node = SimpleNamespace(pulls=pulls, audit=NULL_AUDIT,
                           authority=Authority(data_dir=tmp_path, config=AuthConfig()))
    app = Starlette(routes=routes(cast(Any, node)))
    async with trio.open_nursery() as nursery:
        await nursery.start(pulls.run)
        t = pulls.start("m")
        await t.wait_resolved()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://node") as http:
            rows = (await http.get("/v1/transfers")).json()["transfers"]
            assert [(r["id"], r["state"], r["model"], r["finished_at"]) for r in rows] == [
                (t.id, "downloading", "m", None)]
            assert rows[0]["completed"] < rows[0]["total"] == MANIFEST.size
            gate.set()
            await t.wait()
            rows = (await http.get("/v1/transfers")).json()["transfers"]
            assert rows[0]["state"] == "done"
        nursery.cancel_scope.cancel()
