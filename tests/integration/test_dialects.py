"""The OpenAI Responses and Anthropic Messages APIs through a two-node mesh: A serves
FAKE_MODEL (FakeBackend), B serves nothing, every request goes to B's API and is placed
on A like a chat (real libp2p hosts on 127.0.0.1)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

import peerllm
from peerllm.api import open_api
from peerllm.auth import Role
from peerllm.config import AuthConfig
from peerllm.node import Node
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, audit_lines, wait_until, with_fake_model

TOKENS = ("Hello", " there", ",", " friend", ".")
TEXT = "".join(TOKENS)


@asynccontextmanager
async def mesh(make_config: MakeConfig, *, b_auth: dict[str, Any] | None = None,
               backend: FakeBackend | None = None, **a_inference: Any
               ) -> AsyncIterator[tuple[Node, Node, httpx.AsyncClient]]:
    """A serving FAKE_MODEL (with ``a_inference`` settings), B bootstrapped to A (with
    ``b_auth``), a client of B's API."""
    async with peerllm.open_node(with_fake_model(make_config("a", dht=False), **a_inference),
                                 backend=backend or FakeBackend(tokens=TOKENS)) as a:
        b_cfg = make_config("b", dht=False, bootstrap=[a.addrs()[0]])
        b_cfg = dataclasses.replace(b_cfg, auth=AuthConfig(**(b_auth or {})))
        async with peerllm.open_node(b_cfg) as b, open_api(b) as url, \
                httpx.AsyncClient(base_url=url, trust_env=False) as http:
            await wait_until(lambda: bool(b.router.candidates(FAKE_MODEL)[0]),
                             timeout_s=30, what=f"b to see {FAKE_MODEL}")
            yield a, b, http


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) of each server-sent event."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_responses_whole_and_streamed_through_the_mesh(make_config: MakeConfig) -> None:
    async with mesh(make_config) as (a, b, http):
        body = {"model": FAKE_MODEL, "instructions": "Be brief.", "max_output_tokens": 16,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
        resp = await http.post("/v1/responses", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-peerllm-served-by"] == a.peer_id
        obj = resp.json()
        assert obj["object"] == "response" and obj["status"] == "completed"
        assert obj["id"].startswith("resp_") and obj["instructions"] == "Be brief."
        [item] = obj["output"]
        assert item["type"] == "message" and item["role"] == "assistant"
        assert item["content"][0]["type"] == "output_text"
        assert item["content"][0]["text"] == TEXT
        usage = obj["usage"]
        assert usage["output_tokens"] == len(TOKENS) and usage["input_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

        streamed = await http.post("/v1/responses", json=body | {"stream": True})
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = sse(streamed.text)
        names = [name for name, _ in events]
        deltas_n = names.count("response.output_text.delta")  # tokens may be coalesced
        assert 1 <= deltas_n <= len(TOKENS)
        assert names == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added",
                         *["response.output_text.delta"] * deltas_n,
                         "response.output_text.done", "response.content_part.done",
                         "response.output_item.done", "response.completed"]
        assert all(data["type"] == name for name, data in events)
        assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
        deltas = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
        assert deltas == TEXT == events[-4][1]["text"]
        final = events[-1][1]["response"]
        assert final["output"][0]["content"][0]["text"] == TEXT
        assert final["usage"]["output_tokens"] == len(TOKENS)
        # One audit line per request, on the node the client called (written as the
        # response ends, so maybe just after the client read it).
        await wait_until(lambda: len(audit_lines(b.data_dir, "inference")) == 2,
                         timeout_s=10, what="b's two inference audit lines")


async def test_responses_cut_by_max_output_tokens_is_incomplete(make_config: MakeConfig
                                                                ) -> None:
    async with mesh(make_config) as (_, _, http):
        body = {"model": FAKE_MODEL, "input": "hi", "max_output_tokens": 2}
        obj = (await http.post("/v1/responses", json=body)).json()
        assert obj["status"] == "incomplete"
        assert obj["incomplete_details"] == {"reason": "max_output_tokens"}
        events = sse((await http.post("/v1/responses", json=body | {"stream": True})).text)
        assert events[-1][0] == "response.incomplete"


async def test_responses_refusals_name_the_field(make_config: MakeConfig) -> None:
    async with mesh(make_config) as (_, _, http):
        for extra, field in [({"tools": [{"type": "function", "name": "f"}]}, "tools"),
                             ({"previous_response_id": "resp_1"}, "previous_response_id"),
                             ({"text": {"format": {"type": "json_object"}}}, "text.format"),
                             ({"input": [{"type": "function_call_output"}]}, "input[0].type")]:
            resp = await http.post("/v1/responses",
                                   json={"model": FAKE_MODEL, "input": "hi"} | extra)
            assert resp.status_code == 400, extra
            assert resp.json()["error"]["param"] == field
        resp = await http.post("/v1/responses", json={"model": "nope", "input": "hi"})
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"


async def test_messages_whole_and_streamed_through_the_mesh(make_config: MakeConfig) -> None:
    async with mesh(make_config) as (a, _, http):
        body = {"model": FAKE_MODEL, "max_tokens": 16, "system": "Be brief.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
        headers = {"anthropic-version": "2023-06-01"}
        resp = await http.post("/v1/messages", json=body, headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-peerllm-served-by"] == a.peer_id
        obj = resp.json()
        assert obj["type"] == "message" and obj["role"] == "assistant"
        assert obj["content"] == [{"type": "text", "text": TEXT}]
        assert obj["stop_reason"] == "end_turn" and obj["stop_sequence"] is None
        assert obj["usage"]["output_tokens"] == len(TOKENS) and obj["usage"]["input_tokens"] > 0

        streamed = await http.post("/v1/messages", json=body | {"stream": True},
                                   headers=headers)
        events = sse(streamed.text)
        names = [n for n, _ in events]
        # Tokens produced while a frame is being written travel together (coalesced), so
        # a delta carries one token or several.
        deltas = names.count("content_block_delta")
        assert 1 <= deltas <= len(TOKENS)
        assert names == ["message_start", "content_block_start", "ping",
                         *["content_block_delta"] * deltas,
                         "content_block_stop", "message_delta", "message_stop"]
        assert all(data["type"] == name for name, data in events)
        assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") \
            == TEXT
        delta = events[-2][1]
        assert delta["delta"]["stop_reason"] == "end_turn"
        assert delta["usage"] == obj["usage"]

        cut = (await http.post("/v1/messages", json=body | {"max_tokens": 2})).json()
        assert cut["stop_reason"] == "max_tokens"


async def test_messages_errors_are_anthropic_shaped(make_config: MakeConfig) -> None:
    async with mesh(make_config) as (_, _, http):
        resp = await http.post("/v1/messages", json={
            "model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 400
        assert resp.json() == {"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: required (the most tokens to generate)"}}
        resp = await http.post("/v1/messages", json={
            "model": "nope", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 404
        assert resp.json()["error"]["type"] == "not_found_error"
        resp = await http.post("/v1/messages", content=b"{not json")
        assert resp.status_code == 400 and resp.json()["type"] == "error"


async def test_a_token_in_x_api_key_is_accepted_and_none_is_an_anthropic_401(
        make_config: MakeConfig) -> None:
    async with mesh(make_config, b_auth={"required": True}) as (_, b, http):
        body = {"model": FAKE_MODEL, "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]}
        resp = await http.post("/v1/messages", json=body)
        assert resp.status_code == 401
        err = resp.json()
        assert err["type"] == "error" and err["error"]["type"] == "authentication_error"

        token, _ = b.authority.create_token(subject="dora", roles=[Role.USER], ttl_s=600,
                                            now=int(time.time()))
        resp = await http.post("/v1/messages", json=body, headers={"x-api-key": token})
        assert resp.status_code == 200, resp.text
        # Authorization wins over x-api-key: a bad bearer is refused even with a good key.
        resp = await http.post("/v1/messages", json=body, headers={
            "x-api-key": token, "authorization": "Bearer nonsense"})
        assert resp.status_code == 401
        # Any route takes the key, the OpenAI-shaped ones too.
        resp = await http.post("/v1/responses", json={"model": FAKE_MODEL, "input": "hi",
                                                      "max_output_tokens": 4},
                               headers={"x-api-key": token})
        assert resp.status_code == 200, resp.text
        await wait_until(lambda: [x["subject"] for x in audit_lines(b.data_dir, "inference")]
                         == ["dora", "dora"], timeout_s=10, what="dora's two audit lines")


async def test_a_failure_mid_stream_ends_each_stream_with_its_error_event(
        make_config: MakeConfig) -> None:
    # A's deadline cuts an endless generation after some tokens; B has no other replica
    # to resume on, so the stream it already started ends with an in-band error.
    async with mesh(make_config, backend=FakeBackend(token_s=0.01),
                    inference_timeout_s=0.5) as (_, _, http):
        got = sse((await http.post("/v1/messages", json={
            "model": FAKE_MODEL, "max_tokens": 30000, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]})).text)
        assert got[0][0] == "message_start" and "content_block_delta" in {n for n, _ in got}
        name, data = got[-1]
        assert name == "error" and data["type"] == "error"
        # No replica could take over: a 503 had it come before the stream (NoRoute).
        assert data["error"]["type"] == "overloaded_error"
        assert "inference timed out" in data["error"]["message"]

        got = sse((await http.post("/v1/responses", json={
            "model": FAKE_MODEL, "max_output_tokens": 30000, "stream": True,
            "input": "hi"})).text)
        assert got[0][0] == "response.created"
        name, data = got[-1]
        assert name == data["type"] == "error" and data["code"] == "no_route"
        assert data["sequence_number"] == len(got) - 1
