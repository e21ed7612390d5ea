"""Hostile input on the HTTP API of a real node: never a 5xx, always the API's error shape.

One node (FakeBackend, the fake model) serves its API over real HTTP (hypercorn) from a
thread of its own for the whole module, so hypothesis can throw hundreds of bodies at it
cheaply. The property, for every POST route in ROUTE_ROLES: the status is 2xx or 4xx,
an error body is JSON in the shape of the route's API, and the next normal request still
works. Then one regression test per case of issue #10 (and the cases that already held).
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import peerllm
from peerllm.api import open_api
from peerllm.api.access import ROUTE_ROLES
from peerllm.api.ollama_unsupported import NOT_YET
from peerllm.api.schemas import MAX_BODY_BYTES
from peerllm.auth import Role
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, node_config, wait_until, with_fake_model

POST_ROUTES = sorted(path.replace("{model_id:path}", FAKE_MODEL)
                     for method, path in ROUTE_ROLES if method == "POST" and path not in NOT_YET)
"""Every POST route of the app, from the one route table (new routes are covered too),
but the Ollama ones that answer 501 whatever the body (tested below)."""

CHAT = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
HOSTILE = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])


# -- the node, served from a thread ------------------------------------------------------


@dataclass
class Served:
    url: str
    http: httpx.Client
    file: Path  # the fake model's file


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cfg = with_fake_model(node_config(tmp_path_factory.mktemp("hostile"), "target"),
                          api={"body_timeout_s": 3.0})
    box: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException]
    box = queue.Queue()

    async def serve() -> None:
        try:
            async with peerllm.open_node(cfg, backend=FakeBackend(tokens=["ok"])) as node, \
                    open_api(node) as url:
                with trio.CancelScope() as scope:
                    box.put((url, trio.lowlevel.current_trio_token(), scope))
                    await trio.sleep_forever()
        except BaseException as exc:  # the test thread must hear of it, not hang
            box.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    got = box.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    url, token, scope = got
    assert cfg.models.paths
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        yield Served(url, http, Path(cfg.models.paths[0]))
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(timeout=30)


def post(served: Served, path: str, body: bytes | str | dict[str, Any],
         **headers: str) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return served.http.post(path, content=content,
                            headers={"content-type": "application/json", **headers})


def check_shape(path: str, resp: httpx.Response) -> None:
    """2xx or 4xx; an error is JSON in the API's shape, with a message and no internals."""
    assert resp.status_code < 500, (path, resp.status_code, resp.text[:500])
    if resp.status_code < 400:
        return
    body = resp.json()
    message = body["error"] if path.startswith("/api/") else body["error"]["message"]
    assert isinstance(message, str) and message, (path, body)
    for leak in ("Traceback", "Error:", "Exception", "sys.set_int_max_str_digits"):
        assert leak not in message, (path, message)


def still_serving(served: Served) -> None:
    resp = post(served, "/v1/chat/completions", CHAT)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "ok"


# -- hypothesis: random bodies and random shapes of each route's fields ------------------


class Raw(str):
    """JSON text put into a body as is (a number no encoder writes: 1e999, 5000 digits)."""


def dump(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate goes out as \ud800


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(st.characters() | surrogates, max_size=20)
numbers = (st.integers() | st.floats(allow_nan=False)
           | st.sampled_from([Raw("1e999"), Raw("-1e999"), Raw("1e-999"), Raw("9" * 5000),
                              Raw("-0"), Raw("1" + "0" * 400), Raw("18446744073709551616")]))
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=12)
models = st.sampled_from([FAKE_MODEL, "nosuch", "../../etc/passwd", "", " ", "\ud800",
                          "a" * 5000]) | json_values
roles = st.sampled_from(["system", "user", "assistant", "developer", "tool", "function",
                         "nobody"]) | json_values
messages = st.lists(st.fixed_dictionaries({"role": roles}, optional={
    "content": texts | json_values | st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]) | json_values}, optional={
            "text": texts | json_values}), max_size=3),
    "images": json_values}), max_size=4) | json_values
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": models, "name": models, "messages": messages, "prompt": texts | json_values,
    "input": texts | st.lists(texts, max_size=4) | json_values, "stream": json_values,
    "temperature": numbers | json_values, "top_p": numbers | json_values,
    "top_k": numbers | json_values, "max_tokens": numbers | json_values,
    "num_predict": numbers | json_values, "seed": numbers | json_values,
    "stop": texts | st.lists(texts, max_size=3) | json_values, "user": texts | json_values,
    "n": numbers, "options": st.dictionaries(
        st.sampled_from(["temperature", "top_p", "num_predict", "seed", "stop", "num_ctx",
                         "top_k", "zzz"]), numbers | texts | json_values, max_size=4),
    "raw": json_values, "system": texts, "warmup": json_values, "tokens": numbers,
    "role": json_values, "ttl_s": numbers, "models": json_values,
    "keep_alive": numbers | texts, "format": json_values,
}
shaped = st.fixed_dictionaries({}, optional=FIELDS)


@HOSTILE
@given(path=st.sampled_from(POST_ROUTES), body=json_values)
def test_random_json_never_gets_a_5xx(served: Served, path: str, body: Any) -> None:
    check_shape(path, post(served, path, dump(body)))
    still_serving(served)


@HOSTILE
@given(path=st.sampled_from(POST_ROUTES), body=shaped)
def test_random_shapes_of_the_fields_never_get_a_5xx(served: Served, path: str,
                                                     body: dict[str, Any]) -> None:
    body = body | {"stream": False} if body.get("stream") is True else body
    check_shape(path, post(served, path, dump(body)))
    still_serving(served)


@HOSTILE
@given(path=st.sampled_from(POST_ROUTES), data=st.binary(max_size=200))
def test_random_bytes_never_get_a_5xx(served: Served, path: str, data: bytes) -> None:
    check_shape(path, post(served, path, data))
    still_serving(served)


# -- regressions: each case of issue #10 -------------------------------------------------


SURROGATE_CASES = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\ud800"}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "\udfff"}]}]}, "messages[0].content[0].text"),
    ("/v1/completions", {"prompt": "\ud800"}, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": ["ok", "\ud800"]}, "stop[1]"),
    ("/v1/chat/completions", CHAT | {"user": "\ud800"}, "user"),
    ("/v1/embeddings", {"input": "\ud800"}, "input"),
    ("/v1/embeddings", {"input": ["x", "\ud800"]}, "input[1]"),
    ("/api/chat", {"messages": [{"role": "user", "content": "\ud800"}]},
     "messages[0].content"),
    ("/api/generate", {"prompt": "\ud800"}, "prompt"),
    ("/api/embed", {"input": "\ud800"}, "input"),
]


@pytest.mark.parametrize(("path", "fields", "field"), SURROGATE_CASES)
def test_a_lone_surrogate_is_a_400_naming_its_field(served: Served, path: str,
                                                    fields: dict[str, Any], field: str
                                                    ) -> None:
    resp = post(served, path, {"model": FAKE_MODEL} | fields)
    assert resp.status_code == 400, resp.text
    check_shape(path, resp)
    message = resp.text
    assert f"{field}: contains a lone surrogate" in message, message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_lone_surrogate_model_id_is_a_400_and_metrics_still_render(served: Served,
                                                                     path: str) -> None:
    resp = post(served, path, CHAT | {"model": "\ud800"})
    assert resp.status_code == 400
    assert "model: contains a lone surrogate" in resp.text
    assert served.http.get("/metrics").status_code == 200


def test_a_lone_surrogate_in_a_key_is_a_400(served: Served) -> None:
    resp = post(served, "/v1/chat/completions", dump(CHAT | {"\ud800": 1}))
    assert resp.status_code == 400
    assert "lone surrogate" in resp.json()["error"]["message"]


def test_a_session_header_that_is_not_text_is_no_5xx(served: Served) -> None:
    # Headers are bytes; starlette reads them as latin-1, so no surrogate can arise, but
    # the invalid UTF-8 of an encoded surrogate must not break anything either.
    resp = served.http.post("/v1/chat/completions", json=CHAT,
                            headers=[(b"x-peerllm-session", b"\xed\xa0\x80")])
    check_shape("/v1/chat/completions", resp)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1" + "0" * 400])
@pytest.mark.parametrize(("path", "field"), [("/v1/chat/completions", "temperature"),
                                              ("/v1/chat/completions", "top_p"),
                                              ("/api/chat", "options.temperature")])
def test_a_number_too_large_to_be_finite_is_a_400_must_be_finite(
        served: Served, path: str, field: str, number: str) -> None:
    name = field.rpartition(".")[2]
    value = f'{{"{name}": {number}}}' if "." in field else number
    key = field.partition(".")[0]
    body = json.dumps(CHAT)[:-1] + f', "{key}": {value}}}'
    resp = post(served, path, body)
    assert resp.status_code == 400, resp.text
    assert f"{field}: must be finite" in resp.text
    assert "got a number" not in resp.text


def test_an_integer_too_long_to_read_is_a_400_without_internals(served: Served) -> None:
    body = json.dumps(CHAT)[:-1] + ', "n": ' + "9" * 5000 + "}"
    resp = post(served, "/v1/chat/completions", body)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == \
        "request body is not valid JSON: a number has too many digits"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_constants_are_refused(served: Served, constant: str) -> None:
    resp = post(served, "/v1/chat/completions",
                json.dumps(CHAT)[:-1] + f', "temperature": {constant}}}')
    assert resp.status_code == 400
    assert f"{constant} is not valid JSON" in resp.text


def test_deep_nesting_is_a_quick_400(served: Served) -> None:
    for body in ["[" * 100_000, '{"a":' * 100_000, '{"model": ' + "[" * 50_000 + "]" * 50_000
                 + "}"]:
        resp = post(served, "/v1/chat/completions", body)
        assert resp.status_code == 400, resp.text[:200]
        assert "not valid JSON" in resp.json()["error"]["message"]


def test_huge_arrays_within_the_body_cap_are_refused_cleanly(served: Served) -> None:
    many_messages = {"model": FAKE_MODEL,
                     "messages": [{"role": "user", "content": "x"}] * 150_000}
    many_inputs = {"model": FAKE_MODEL, "input": ["x"] * 500_000}
    for path, body in [("/v1/chat/completions", many_messages), ("/api/chat", many_messages),
                       ("/v1/embeddings", many_inputs), ("/api/embed", many_inputs)]:
        data = json.dumps(body).encode()
        assert len(data) < MAX_BODY_BYTES
        resp = post(served, path, data)
        assert 400 <= resp.status_code < 500, (path, resp.text[:300])
        check_shape(path, resp)
    still_serving(served)


def raw_exchange(url: str, request: bytes, *, body: bytes = b"") -> bytes:
    """Send ``request`` (and ``body``), read until the node closes or 5 s pass."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(request + body)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
                if b"\r\n\r\n" in got and b'"error"' in got:
                    break
        except TimeoutError:
            pass
    return got


@pytest.mark.parametrize("megabytes", [10, 100])
def test_an_oversized_declared_body_is_a_413_before_it_is_sent(served: Served,
                                                                megabytes: int) -> None:
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {megabytes << 20}\r\n\r\n")
    got = raw_exchange(served.url, head.encode())  # not one byte of the body sent
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    still_serving(served)


def test_an_oversized_chunked_body_is_a_413(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):  # 10 MB, no Content-Length
            yield b" " * (1 << 20)

    resp = served.http.post("/api/chat", content=chunks())
    assert resp.status_code == 413
    assert "larger than" in resp.json()["error"]
    still_serving(served)


@pytest.mark.parametrize("model", ["../../../etc/passwd", "/etc/passwd", "..", "a/../../b",
                                   "..\\..\\windows"])
def test_path_traversal_in_model_ids_is_refused(served: Served, model: str) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/models/load", {"model": model}), ("/v1/chat/completions", CHAT | {"model": model}),
        ("/api/show", {"model": model})]
    for path, body in cases:
        resp = post(served, path, body)
        assert resp.status_code == 404, (path, resp.text)
        check_shape(path, resp)
    resp = served.http.get(f"/v1/models/{model}")
    assert resp.status_code == 404, resp.text


def test_model_status_shows_the_file_name_not_its_path(served: Served) -> None:
    doc = served.http.get(f"/v1/models/{FAKE_MODEL}").json()
    assert doc["path"] == served.file.name
    assert str(served.file.parent) not in json.dumps(doc)


def test_api_tags_size_is_the_file_size(served: Served) -> None:
    (tag,) = served.http.get("/api/tags").json()["models"]
    assert tag["size"] == served.file.stat().st_size


# -- Ollama fidelity -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_root_says_ollama_is_running(served: Served, method: str) -> None:
    resp = served.http.request(method, "/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text == ("Ollama is running" if method == "GET" else "")


@pytest.mark.parametrize(("method", "path", "what"), [
    ("POST", "/api/push", "pushing"),
    ("POST", "/api/create", "creating"), ("POST", "/api/copy", "copying")])
def test_model_management_of_ollama_is_a_501_in_its_shape(served: Served, method: str,
                                                          path: str, what: str) -> None:
    resp = served.http.request(method, path, json={"model": FAKE_MODEL})
    assert resp.status_code == 501
    error = resp.json()["error"]
    assert isinstance(error, str)
    assert error.startswith(f"{what} models is not supported yet by peerllm")
    assert "--model" in error


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/nosuch", 404), ("POST", "/api/embeddings/x", 404),
    ("GET", "/api/chat", 405), ("PUT", "/api/tags", 405)])
def test_unknown_ollama_endpoints_answer_in_ollamas_shape(served: Served, method: str,
                                                          path: str, status: int) -> None:
    resp = served.http.request(method, path)
    assert resp.status_code == status
    assert isinstance(resp.json()["error"], str)
    if status == 405:
        assert "allow" in resp.headers


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/nosuch", 404), ("GET", "/v1/chat/completions", 405)])
def test_unknown_openai_endpoints_answer_in_openais_shape(served: Served, method: str,
                                                          path: str, status: int) -> None:
    resp = served.http.request(method, path)
    assert resp.status_code == status
    assert isinstance(resp.json()["error"]["message"], str)


# -- slow and aborted uploads ------------------------------------------------------------


def test_a_slow_body_gets_a_408_and_its_connection_closed(served: Served) -> None:
    parts = urlsplit(served.url)
    assert parts.hostname is not None and parts.port is not None
    head = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as s:
        s.sendall(head)
        got = b""
        while chunk := s.recv(65536):  # ends when the node closes the connection
            got += chunk
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"api.body_timeout_s" in got
    still_serving(served)


def test_a_client_that_disconnects_mid_body_is_one_debug_line(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    parts = urlsplit(served.url)
    assert parts.hostname is not None and parts.port is not None
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\"")
    with caplog.at_level(logging.DEBUG):
        for _ in range(20):
            with socket.create_connection((parts.hostname, parts.port)) as s:
                s.sendall(head)
        still_serving(served)  # by now the node has read every one of those to its end
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(
                "disconnected before sending the whole body" in r.getMessage()
                for r in caplog.records) < 20:
            time.sleep(0.05)
    lines = [r for r in caplog.records if "disconnected before" in r.getMessage()]
    assert len(lines) == 20
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_past_max_open_requests_a_request_is_a_503_at_once(
        make_config: MakeConfig) -> None:
    backend = FakeBackend(tokens=["a", "b"])
    backend.gate.clear()  # generations hold their requests open until released
    cfg = with_fake_model(make_config("capped"), api={"max_open_requests": 2})
    async with peerllm.open_node(cfg, backend=backend) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(functools.partial(http.post, "/v1/chat/completions",
                                                     json=CHAT))
            engine = node.engine
            assert engine is not None
            await wait_until(lambda: sum(m.active + m.queued for m in engine.registry.list())
                             >= 2, what="two requests open")
            refused = await http.post("/api/chat", json=CHAT)
            assert refused.status_code == 503
            assert "api.max_open_requests" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
            backend.gate.set()
        resp = await http.post("/v1/chat/completions", json=CHAT)
        assert resp.status_code == 200


async def test_api_tags_shows_the_file_size_on_a_node_without_the_model(
        make_config: MakeConfig) -> None:
    holder_cfg = with_fake_model(make_config("holder"))
    assert holder_cfg.models.paths
    file_size = (await trio.Path(holder_cfg.models.paths[0]).stat()).st_size
    async with peerllm.open_node(holder_cfg, backend=FakeBackend()) as holder, \
            peerllm.open_node(make_config("other", bootstrap=[holder.addrs()[0]])) as other, \
            open_api(holder) as holder_url, open_api(other) as other_url, \
            httpx.AsyncClient(trust_env=False) as http:
        await wait_until(lambda: FAKE_MODEL in other.mesh_models(), what="model seen")
        sizes = []
        for url in (holder_url, other_url):
            (tag,) = (await http.get(f"{url}/api/tags")).json()["models"]
            sizes.append(tag["size"])
        assert sizes == [file_size] * 2


async def test_only_an_admin_token_sees_the_model_files_full_path(make_config: MakeConfig
                                                                  ) -> None:
    cfg = with_fake_model(make_config("paths"), auth={"required": True})
    assert cfg.models.paths
    file = Path(cfg.models.paths[0])
    async with peerllm.open_node(cfg, backend=FakeBackend()) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        now = int(time.time())
        shown = {}
        for role in (Role.READONLY, Role.OPERATOR, Role.ADMIN):
            token, _ = node.authority.create_token(subject=role.label, roles=[role],
                                                   ttl_s=60, now=now)
            resp = await http.get(f"/v1/models/{FAKE_MODEL}",
                                  headers={"authorization": f"Bearer {token}"})
            shown[role] = resp.json()["path"]
    assert shown == {Role.READONLY: file.name, Role.OPERATOR: file.name,
                     Role.ADMIN: str(file)}
