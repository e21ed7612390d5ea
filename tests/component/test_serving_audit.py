"""mesh.audited over in-memory streams on a virtual clock: every request a peer asks us
to serve leaves one ``inference`` audit line (served, refused, abandoned, timed out),
and a per-peer limit refusal reaches the ``on_limited`` hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import pytest
import trio
import trio.testing

from peerllm.errors import InferenceRejected
from peerllm.events import TokenChunk
from peerllm.mesh.audited import audit_served, outcome_of
from peerllm.p2p.infer import InferClient, InferServer
from peerllm.security_events import AuditEvent, PeerLimit
from peerllm.testing import DONE, SILENT, ScriptedGenerator, Step, open_memory_network
from peerllm.wire import infer as wi
from tests.helpers import RecordingAudit

SRV, CLI = "srv", "cli"
SAMPLING = wi.Sampling(max_tokens=16, temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)
PROMPT = "a secret prompt"


def request(*, deadline_ms: int = 60_000) -> wi.InferRequest:
    return wi.InferRequest(request_id=1, model="m", messages=None, prompt=PROMPT,
                           sampling=SAMPLING, deadline_ms=deadline_ms)


@asynccontextmanager
async def serving(steps: list[Step], *, per_peer: int = 8
                  ) -> AsyncIterator[tuple[InferClient, RecordingAudit, list[object]]]:
    audit, limited = RecordingAudit(), []
    server = InferServer(
        self_peer_id=SRV, generate=audit_served(ScriptedGenerator(steps), audit, served_by=SRV),
        max_streams_per_peer=per_peer, on_limited=lambda *args: limited.append(args))
    async with open_memory_network() as net:
        net.serve(SRV, wi.PROTOCOL_ID, server.handle)
        yield InferClient(net.opener(CLI), accept_timeout_s=5.0), audit, limited


async def until_lines(audit: RecordingAudit, n: int) -> None:
    while len(audit.lines) < n:
        await trio.testing.wait_all_tasks_blocked()


async def test_a_served_request_is_one_line_naming_the_asking_peer(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", 0.25, "b", DONE]) as (client, audit, _):
        async with client.request(SRV, request()) as remote:
            assert [ev async for ev in remote.events()][-1].completion_tokens == 2
        await until_lines(audit, 1)
    [(event, line)] = audit.lines
    assert event is AuditEvent.INFERENCE
    assert line == {"kind": "generation", "model": "m", "served_by": SRV,
                    "forwarded_by": CLI, "client": None, "subject": None, "tokens_in": 1,
                    "tokens_out": 2, "duration_ms": 250.0, "outcome": "ok"}
    assert PROMPT not in repr(audit.lines)


async def test_a_refusal_is_a_line_with_its_code(autojump_clock: trio.abc.Clock) -> None:
    refusal = InferenceRejected("model_not_found", "not here", retryable=False)
    async with serving([refusal]) as (client, audit, _):
        with pytest.raises(InferenceRejected):
            async with client.request(SRV, request()):
                pass
        await until_lines(audit, 1)
    assert [(line["outcome"], line["tokens_out"]) for line in audit.of(AuditEvent.INFERENCE)] \
        == [("model_not_found", 0)]


async def test_a_peer_that_leaves_mid_stream_is_cancelled_with_the_tokens_so_far(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", "b", SILENT]) as (client, audit, _):
        async with client.request(SRV, request()) as remote, \
                aclosing(remote.events()) as events:
            got = 0
            while got < 2:  # the two tokens may come coalesced in one frame
                chunk = await anext(events)
                assert isinstance(chunk, TokenChunk)
                got += chunk.n_tokens
        await until_lines(audit, 1)
    [line] = audit.of(AuditEvent.INFERENCE)
    assert (line["outcome"], line["tokens_in"], line["tokens_out"]) == ("cancelled", None, 2)


async def test_the_deadline_passing_is_cancelled(autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", SILENT]) as (client, audit, _):
        with pytest.raises(InferenceRejected, match="deadline"):
            async with client.request(SRV, request(deadline_ms=1000)) as remote:
                _ = [ev async for ev in remote.events()]
        await until_lines(audit, 1)
    [line] = audit.of(AuditEvent.INFERENCE)
    assert (line["outcome"], line["duration_ms"]) == ("cancelled", 1000.0)


async def test_too_many_streams_calls_the_limit_hook(autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", SILENT], per_peer=1) as (client, _, limited), \
            client.request(SRV, request()) as remote, aclosing(remote.events()) as events:
        await anext(events)
        with pytest.raises(InferenceRejected) as err:
            async with client.request(SRV, request()):
                pass
    assert err.value.code == "too_many_streams"
    assert limited == [(CLI, PeerLimit.STREAMS)]


def test_outcome_of_finds_the_reason_inside_groups() -> None:
    busy = InferenceRejected("busy", "full", retryable=True)
    assert outcome_of(BaseExceptionGroup("g", [ExceptionGroup("h", [busy])])) == "busy"
    assert outcome_of(ValueError("bug")) == "error"
