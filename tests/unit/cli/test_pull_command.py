"""`peerllm pull` and the `peerllm models` table against a scripted HTTP server."""

from __future__ import annotations

import json

from tests.unit.cli.test_client_commands import Stub, invoke, sse, stub

__all__ = ["stub"]  # the scripted server fixture

DIGEST = "sha256:" + "ab" * 32
PROGRESS = [
    {"status": "pulling manifest", "state": "resolving", "total": None, "completed": 0},
    {"status": "pulling abababababab", "state": "downloading", "digest": DIGEST,
     "total": 1000, "completed": 400, "sources": [{"label": "12D3KooWpeer", "kind": "peer",
                                                    "state": "active", "bytes": 400}]},
    {"status": "success", "state": "done", "digest": DIGEST, "model": "m",
     "total": 1000, "completed": 1000, "sources": []},
]


def test_pull_json_prints_one_event_per_line_and_sends_the_digest(stub: Stub) -> None:
    stub.answers["/v1/models/pull"] = (200, "text/event-stream", sse(*PROGRESS))
    code, out, _ = invoke("pull", "m", "--api", stub.url, "--digest", DIGEST, "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == PROGRESS
    assert json.loads(stub.seen[0][2]) == {"model": "m", "digest": DIGEST}


def test_pull_shows_progress_then_the_model(stub: Stub) -> None:
    stub.answers["/v1/models/pull"] = (200, "text/event-stream", sse(*PROGRESS))
    code, out, _ = invoke("pull", "m", "--api", stub.url)
    assert code == 0
    assert f"m is ready ({DIGEST})" in out


def test_pull_errors_are_one_line(stub: Stub) -> None:
    stub.json("/v1/models/pull", {"error": {"message": "no peer in the mesh serves the "
                                            "model 'zz'", "code": "model_not_found"}},
              status=404)
    code, _, err = invoke("pull", "zz", "--api", stub.url)
    assert code == 1
    assert err.strip() == "Error: HTTP 404: no peer in the mesh serves the model 'zz'"


def test_a_failure_mid_stream_is_an_error(stub: Stub) -> None:
    stub.answers["/v1/models/pull"] = (200, "text/event-stream", sse(
        PROGRESS[0], {"error": {"message": "every source failed", "code": "no_source"}}))
    code, _, err = invoke("pull", "m", "--api", stub.url, "--json")
    assert code == 1 and "every source failed" in err


def test_models_shows_digest_size_holders_and_loaded(stub: Stub) -> None:
    stub.json("/v1/models", {"data": [{"id": "m", "peerllm": {"providers": [
        {"peer_id": "12D3KooWabc", "name": "box", "local": True, "loaded": True,
         "digest": DIGEST, "file_bytes": 3 << 20},
        {"peer_id": "12D3KooWdef", "name": "far", "local": False, "loaded": False,
         "digest": DIGEST, "file_bytes": 3 << 20}]}}]})
    code, out, _ = invoke("models", "--api", stub.url)
    assert code == 0
    row = next(line for line in out.splitlines() if "abababababab" in line)
    assert "3.0 MiB" in row and "box (local), far" in row
    assert row.rstrip(" │┃").endswith("box (local)")


def test_sources_are_shown_by_node_name_when_known() -> None:
    from peerllm.cli.pull import _sources

    doc = {"sources": [
        {"label": "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "kind": "peer",
         "state": "active"},
        {"label": "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBtail12chars", "kind": "peer",
         "state": "active"},
        {"label": "https://hub.example", "kind": "http", "state": "active"},
        {"label": "12D3KooWCCCC", "kind": "peer", "state": "dropped"}]}
    names = {"12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA": "node-a"}
    assert _sources(doc, names) == "from node-a, Btail12chars, https://hub.example"
    assert _sources({"sources": []}, names) == ""
