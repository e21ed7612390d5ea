"""The router sends a chat's next turn to the node advertising the conversation so far
(node-info ModelInfo.prefixes), unless the session remembers another node or affinity
is off."""

from __future__ import annotations

import dataclasses
import time

import trio

from peerllm.events import Done
from peerllm.inference.prefixes import answered_digest, next_turn_prefix
from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams
from peerllm.mesh.router import Router
from peerllm.testing import make_node_info

from .fakes import MODEL, FakeNode, make_router, ok

PEERS = [f"p{i}" for i in range(6)]
FIRST = GenerationRequest(model=MODEL, messages=(ChatMessage(role="user", content="hi"),),
                          params=SamplingParams(max_tokens=8))
SECOND = dataclasses.replace(FIRST, messages=(
    *(FIRST.messages or ()), ChatMessage(role="assistant", content="ab"),
    ChatMessage(role="user", content="and then?")))


def advertise(node: FakeNode, peer_id: str, prefixes: tuple[bytes, ...]) -> None:
    info = make_node_info(peer_id, models=(MODEL,), boot_nonce=b"\x01" * 16, seq=2)
    info = dataclasses.replace(info, models=tuple(
        dataclasses.replace(m, prefixes=prefixes) for m in info.models))
    node.registry.info_received(peer_id, info, rtt_ms=1.0, now=time.time(),
                                compatible_version=info.protocol_version)


async def place(router: Router, req: GenerationRequest, session: str | None = None) -> str:
    async with router.open(req, session=session) as routed:
        async for ev in routed.events():
            if isinstance(ev, Done):
                return routed.served_by
    raise AssertionError("no Done")


def test_the_next_turns_prefix_is_the_previous_turns_answered_digest() -> None:
    holder = answered_digest(FIRST, "ab")
    assert holder is not None and next_turn_prefix(SECOND) == holder
    assert next_turn_prefix(FIRST) is None  # nothing before the first message
    assert next_turn_prefix(dataclasses.replace(SECOND, messages=(SECOND.messages or ())[:2])) \
        is None  # the last turn is the assistant's: nothing new to answer
    assert next_turn_prefix(GenerationRequest(model=MODEL, prompt="hi")) is None
    resumed = dataclasses.replace(FIRST, resume_text="a")
    assert answered_digest(resumed, "b") == holder  # the answer the caller saw, whole


async def test_a_next_turn_without_a_session_goes_to_the_prefix_holder(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, client = make_router({p: [ok()] for p in PEERS})
    advertise(node, "p4", (b"\x00" * 8, answered_digest(FIRST, "ab") or b""))
    for _ in range(5):  # however the near-tied peers are drawn
        assert await place(router, SECOND) == "p4"
    # Other conversations, and first turns, are ranked as before: spread over the peers.
    served = {await place(router, FIRST) for _ in range(20)}
    assert len(served) > 1
    assert len(client.calls) == 25


async def test_the_sessions_own_node_wins_and_affinity_off_ignores_prefixes(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, _ = make_router({p: [ok()] for p in PEERS})
    advertise(node, "p4", (answered_digest(FIRST, "ab") or b"",))
    router.remember_affinity("chat-1", "p2")
    assert await place(router, SECOND, session="chat-1") == "p2"
    assert await place(router, SECOND, session="chat-2") == "p4"  # new session: the prefix
    router.settings = dataclasses.replace(router.settings, affinity=False)
    assert {await place(router, SECOND) for _ in range(20)} != {"p4"}
