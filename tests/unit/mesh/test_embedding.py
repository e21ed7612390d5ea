"""Placing embed requests (mesh.embedding) over scripted peers on a virtual clock: the
next replica after a failure, no blame for busy or refusing peers, refusals heard,
peers that do not speak /peerllm/embed never asked."""

from __future__ import annotations

import dataclasses
import time

import pytest
import trio

from peerllm.errors import InferenceRejected, NoRoute, PeerConnectionLost, PeerUnavailable
from peerllm.mesh.router import Router
from peerllm.p2p.embed import EmbedAnswer
from peerllm.wire import embed as we
from peerllm.wire import infer as wi
from peerllm.wire import nodeinfo as w

from .fakes import MODEL, FakeNode, info, make_router, state

ANSWER = EmbedAnswer(vectors=[[1.0, 0.0], [0.0, 1.0]], prompt_tokens=5)
INPUTS = ["a", "b"]


class ScriptedEmbeds:
    """The EmbedTransport port: each peer answers its script in turn."""

    def __init__(self, scripts: dict[str, list[EmbedAnswer | Exception]]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, we.EmbedRequest]] = []
        self._ids = 0

    def next_request_id(self) -> int:
        self._ids += 1
        return self._ids

    async def embed(self, peer_id: str, req: we.EmbedRequest) -> EmbedAnswer:
        self.calls.append((peer_id, req))
        await trio.sleep(0.1)
        item = self.scripts[peer_id].pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def asked(self) -> list[str]:
        return [peer for peer, _ in self.calls]


def embed_router(scripts: dict[str, list[EmbedAnswer | Exception]]
                 ) -> tuple[Router, FakeNode, ScriptedEmbeds]:
    router, node, _ = make_router({peer: [] for peer in scripts})
    transport = ScriptedEmbeds(scripts)
    router.embed_transport = transport
    return router, node, transport


def refused(code: str) -> InferenceRejected:
    return InferenceRejected(code, f"{code}: no", retryable=code == "rate_limited")


async def test_a_failing_replica_is_blamed_and_the_next_one_answers(
        autojump_clock: trio.abc.Clock) -> None:
    crashed = InferenceRejected("internal", "engine crashed", retryable=True)
    router, _, transport = embed_router({"a": [crashed] * 5, "b": [ANSWER] * 5})
    for _ in range(5):
        placed = await router.embed(MODEL, INPUTS)
        assert (placed.served_by, placed.vectors, placed.prompt_tokens, placed.local) == \
            ("b", ANSWER.vectors, 5, False)
        assert placed.attempts in ([], ["a"])
    assert "a" in transport.asked()  # tried, failed, blamed: its breaker opened
    assert state(router, "a") == "open" and state(router, "b") == "closed"
    req = transport.calls[-1][1]
    assert (req.model, req.inputs) == (MODEL, tuple(INPUTS))
    assert 0 < req.deadline_ms <= 300_000


async def test_a_stale_connection_is_redialled_once(autojump_clock: trio.abc.Clock) -> None:
    router, node, transport = embed_router({"a": [PeerConnectionLost("a", "reset"), ANSWER]})
    assert (await router.embed(MODEL, INPUTS)).served_by == "a"
    assert node.host.disconnected == ["a"] and transport.asked() == ["a", "a"]
    assert state(router, "a") == "closed"


async def test_a_peer_that_is_gone_is_suspected(autojump_clock: trio.abc.Clock) -> None:
    router, node, _ = embed_router({"a": [PeerUnavailable("a", "refused")] * 2})
    node.host.down.add("a")  # no connection: nothing to redial
    with pytest.raises(NoRoute) as err:
        await router.embed(MODEL, INPUTS)
    assert "refused" in err.value.reasons["a"]
    assert node.suspected == ["a"]


async def test_busy_and_refusing_replicas_are_not_blamed(autojump_clock: trio.abc.Clock
                                                         ) -> None:
    busy = InferenceRejected("too_many_streams", "full", retryable=True, retry_after_s=0.2)
    router, node, transport = embed_router({"a": [busy, refused("forbidden")] * 3,
                                            "b": [busy, refused("forbidden")] * 3})
    for _ in range(3):
        # Both full: wait for their Retry-After, ask again; both refuse this caller.
        with pytest.raises(InferenceRejected) as err:
            await router.embed(MODEL, INPUTS)
        assert err.value.code == "forbidden"
    assert sorted(transport.asked()) == ["a"] * 6 + ["b"] * 6
    assert state(router, "a") == state(router, "b") == "closed"
    assert node.suspected == []


async def test_a_bad_request_is_the_answer_no_other_replica_is_asked(
        autojump_clock: trio.abc.Clock) -> None:
    bad = InferenceRejected("too_large", "too many values", retryable=False)
    router, _, transport = embed_router({"a": [bad], "b": [bad]})
    with pytest.raises(InferenceRejected) as err:
        await router.embed(MODEL, INPUTS)
    assert err.value.code == "too_large" and len(transport.calls) == 1


def speaks_no_embed(node: FakeNode, peer: str) -> None:
    """``peer`` sends node-info again, as a version that predates /peerllm/embed."""
    first = info(peer)
    old = dataclasses.replace(first, seq=first.seq + 1, capabilities=w.Capabilities(
        protocols=(w.PROTOCOL_ID, wi.PROTOCOL_ID), features=(), private_network=False))
    node.registry.info_received(peer, old, rtt_ms=1.0, now=time.time(),
                                compatible_version=w.PROTOCOL_VERSION)


async def test_a_peer_without_the_embed_protocol_is_never_asked(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, transport = embed_router({"old": [ANSWER] * 3, "new": [ANSWER] * 3})
    speaks_no_embed(node, "old")
    for _ in range(3):
        assert (await router.embed(MODEL, INPUTS)).served_by == "new"
    assert set(transport.asked()) == {"new"}
    assert {c.peer_id for c in router.candidates(MODEL)[0]} == {"old", "new"}  # chat: both
    speaks_no_embed(node, "new")
    with pytest.raises(NoRoute) as err:
        await router.embed(MODEL, INPUTS)
    assert err.value.reasons == {"old": f"does not speak {we.PROTOCOL_ID}",
                                 "new": f"does not speak {we.PROTOCOL_ID}"}


async def test_with_nobody_serving_the_model_it_is_no_route(autojump_clock: trio.abc.Clock
                                                            ) -> None:
    router, node, _ = embed_router({"a": [ANSWER]})
    with pytest.raises(NoRoute):
        await router.embed("other-model", INPUTS)
    assert node.discovered == ["other-model"]  # asked membership to look once
