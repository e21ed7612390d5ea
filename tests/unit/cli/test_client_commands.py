"""The CLI's client commands (models, route, peers, run) against a scripted HTTP server."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from peerllm.cli import cli
from peerllm.mesh.documents import peer_row
from peerllm.p2p.registry import Link, PeerRegistry, Source
from peerllm.testing import make_node_info
from peerllm.wire.nodeinfo import PROTOCOL_VERSION
from tests.helpers import free_port


@dataclass
class Stub:
    """Canned answers by path: (status, content type, body); requests are recorded."""

    url: str = ""
    answers: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, list[str]], bytes]] = field(default_factory=list)

    def json(self, path: str, doc: object, status: int = 200) -> None:
        self.answers[path] = (status, "application/json", json.dumps(doc).encode())


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            state.seen.append((url.path, parse_qs(url.query), body))
            status, kind, content = state.answers.get(url.path, (404, "text/plain", b"?"))
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(content)))
            self.send_header("x-peerllm-served-by-name", "stub-node")
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"PEERLLM_API": None})
    return result.exit_code, result.stdout, result.stderr


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) \
        + b"data: [DONE]\n\n"


def test_models_lists_providers(stub: Stub) -> None:
    stub.json("/v1/models", {"data": [{"id": "m", "peerllm": {"providers": [
        {"peer_id": "12D3KooWabc", "name": "box", "local": True, "loaded": True}]}}]})
    code, out, _ = invoke("models", "--api", stub.url, "--json")
    assert code == 0
    assert json.loads(out) == {"models": [{"id": "m", "providers": [
        {"peer_id": "12D3KooWabc", "name": "box", "local": True, "loaded": True}]}]}


def test_route_asks_for_the_model_and_reports_api_errors(stub: Stub) -> None:
    stub.json("/v1/route", {"error": {"message": "model 'zz' is not served by any node",
                                      "type": "invalid_request_error", "code": "not_found"}},
              status=404)
    code, _, err = invoke("route", "zz", "--api", stub.url)
    assert code == 1
    assert err.strip() == "Error: HTTP 404: model 'zz' is not served by any node"
    assert stub.seen[0][:2] == ("/v1/route", {"model": ["zz"]})


def test_peers_json_is_the_daemons_document(stub: Stub) -> None:
    doc = {"self": {"node": {"name": "me", "peer_id": "12D3KooWme"}}, "peers": []}
    stub.json("/v1/peers", doc)
    code, out, _ = invoke("peers", "--api", stub.url, "--json")
    assert (code, json.loads(out)) == (0, doc)


def test_peers_shows_kind_path_and_the_plain_peers_identify(stub: Stub) -> None:
    registry = PeerRegistry("12D3KooWme", stale_after_s=1e9, max_peers=8)
    for peer in ("12D3KooWrelayed1", "12D3KooWrelayR00", "12D3KooWplainP01"):
        registry.saw(peer, Source.DHT, now=1.0)
    for peer, name in (("12D3KooWrelayed1", "far-node"), ("12D3KooWrelayR00", "relay-1")):
        registry.info_received(peer, dataclasses.replace(make_node_info(peer), name=name),
                               rtt_ms=1.0, now=1.0, compatible_version=PROTOCOL_VERSION)
    registry.connection_opened("12D3KooWrelayed1", Link(
        "/ip4/10.0.0.1/tcp/1/p2p/12D3KooWrelayR00/p2p-circuit", relay="12D3KooWrelayR00"),
        now=1.0)
    registry.connection_opened("12D3KooWrelayR00", Link("/ip4/10.0.0.1/tcp/1"), now=1.0)
    registry.plain_peer("12D3KooWplainP01", agent="js-libp2p/3.0.2",
                        protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"), now=1.0)
    registry.connection_opened("12D3KooWplainP01", Link("/ip4/10.0.0.2/tcp/1"), now=1.0)
    rows = [peer_row(e, breaker="closed", relay_name="relay-1" if e.relay else None)
            for e in registry.entries()]
    stub.json("/v1/peers", {"self": {"node": {"name": "me", "peer_id": "12D3KooWme"}},
                            "peers": rows})
    code, out, _ = invoke("peers", "--api", stub.url)
    assert code == 0
    lines = out.splitlines()

    def line(*words: str) -> str:
        return next(ln for ln in lines if all(w in ln for w in words))

    assert "peerllm" in line("far-node", "relayed via relay-1")
    assert "direct" in line("relay-1", "…relayR00")
    assert "direct" in line("…plainP01", "libp2p")
    assert "plain libp2p peers (kept, not used for inference)" in out
    assert "/ipfs/id/1.0.0, /ipfs/ping/1.0.0" in line("…plainP01", "js-libp2p/3.0.2")


def test_run_streams_the_answer_and_names_the_server(stub: Stub) -> None:
    stub.answers["/v1/chat/completions"] = (200, "text/event-stream", sse(
        {"choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {"choices": [{"index": 0, "delta": {"content": " there"}}]}))
    code, out, err = invoke("run", "m", "hi", "--api", stub.url, "--max-tokens", "8")
    assert (code, out, err) == (0, "Hello there\n", "[served by stub-node]\n")
    sent = json.loads(stub.seen[0][2])
    assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["max_tokens"] == 8


def test_run_fails_when_the_stream_reports_an_error(stub: Stub) -> None:
    stub.answers["/v1/completions"] = (200, "text/event-stream", sse(
        {"choices": [{"index": 0, "text": "Once"}]},
        {"error": {"message": "the serving peer failed", "type": "server_error",
                   "code": "peer_error"}}))
    code, out, err = invoke("run", "m", "tell", "--raw", "--api", stub.url)
    assert code == 1
    assert out == "Once"
    assert err.strip() == "Error: HTTP 200: the serving peer failed"


USAGE = {"object": "usage", "node": {"peer_id": "12D3KooWnodeabcdefgh", "name": "box"},
         "by": "peer", "rows": [
             {"peer": "12D3KooWa", "relation": "served_by", "requests": 2, "tokens_in": 10,
              "tokens_out": 6, "gen_s": 1.25},
             {"peer": "12D3KooWb", "relation": "forwarded_by", "requests": 1, "tokens_in": 5,
              "tokens_out": 3, "gen_s": 0.5}],
         "total": {"requests": 3, "tokens_in": 15, "tokens_out": 9, "gen_s": 1.75}}


def test_usage_asks_by_what_and_prints_json_or_a_table(stub: Stub) -> None:
    stub.json("/v1/usage", USAGE)
    code, out, _ = invoke("usage", "--by", "peer", "--json", "--api", stub.url)
    assert (code, json.loads(out)) == (0, USAGE)
    assert stub.seen[0][:2] == ("/v1/usage", {"by": ["peer"]})
    code, out, _ = invoke("usage", "--by", "peer", "--api", stub.url)
    assert code == 0
    lines = [line.split() for line in out.splitlines() if "12D3KooW" in line or "total" in line]
    assert ["12D3KooWa", "served_by", "2", "10", "6", "1.25"] in [
        [c for c in row if c not in "│┃"] for row in lines]
    assert any("total" in row and "1.75" in row for row in lines)


def test_usage_refuses_an_unknown_grouping() -> None:
    code, _, err = invoke("usage", "--by", "colour")
    assert code == 2 and "colour" in err


@pytest.mark.parametrize("command", [["models"], ["route", "m"], ["peers"], ["run", "m", "x"],
                                     ["usage"], ["replicate", "m", "-n", "2"]])
def test_no_daemon_is_one_line_error(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = invoke(*command, "--api", url)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"Error: no peerllm node at {url}: ")


def test_replicate_posts_the_target_and_says_what_the_mesh_has(stub: Stub) -> None:
    stub.json("/v1/models/org/m/replicas", {"model": "org/m", "replicas": 3,
                                            "digest": "sha256:" + "0" * 64,
                                            "holders": ["12D3KooWa"]})
    code, out, _ = invoke("replicate", "org/m", "--replicas", "3", "--api", stub.url)
    assert (code, out) == (0, "org/m: the mesh keeps 3 copies; 1 live holder now\n")
    assert stub.seen[0][0] == "/v1/models/org/m/replicas"
    assert json.loads(stub.seen[0][2]) == {"replicas": 3}


def test_replicate_refuses_a_bad_count_before_asking() -> None:
    code, _, err = invoke("replicate", "m", "--replicas", "65")
    assert code == 2 and "--replicas" in err


def test_replicate_reports_the_nodes_refusal(stub: Stub) -> None:
    stub.json("/v1/models/zz/replicas", {"error": {
        "message": "model 'zz' is not served by this node", "type": "invalid_request_error",
        "code": "model_not_found", "param": "model"}}, status=404)
    code, _, err = invoke("replicate", "zz", "-n", "2", "--api", stub.url)
    assert code == 1 and err.strip() == "Error: HTTP 404: model 'zz' is not served by this node"
