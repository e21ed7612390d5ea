"""InferServer and InferClient over in-memory streams on a virtual clock: a whole
/peerllm/infer exchange, the client leaving, hostile and silent peers, limits, errors."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager

import pytest
import trio
import trio.testing

from peerllm.errors import (
    InferenceRejected,
    PeerConnectionLost,
    PeerTimeout,
    RemoteProtocolError,
)
from peerllm.events import Done, TokenChunk
from peerllm.p2p.infer import REQUEST_READ_TIMEOUT_S, InferClient, InferServer
from peerllm.p2p.limits import PeerRate
from peerllm.p2p.streams import ByteStream, receive_event
from peerllm.testing import (
    DONE,
    SILENT,
    MemoryNetwork,
    ScriptedGenerator,
    Step,
    open_memory_network,
)
from peerllm.wire import infer as wi
from peerllm.wire.framing import FrameDecoder, encode_frame

SRV, CLI = "srv", "cli"
ACCEPT_S = 5.0
LOAD = wi.Load(active=1, queued=0, capacity=2)
SAMPLING = wi.Sampling(max_tokens=16, temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)


def request(rid: int = 1, *, deadline_ms: int = 60_000) -> wi.InferRequest:
    return wi.InferRequest(request_id=rid, model="m", messages=None, prompt="hi",
                           sampling=SAMPLING, deadline_ms=deadline_ms)


@asynccontextmanager
async def serving(steps: list[Step], *, per_peer: int = 8, streams_per_s: float | None = None,
                  servers: list[InferServer] | None = None,
                  ) -> AsyncIterator[tuple[MemoryNetwork, InferClient, ScriptedGenerator]]:
    generator = ScriptedGenerator(steps)
    async with open_memory_network() as net:
        rate = None if streams_per_s is None else PeerRate(streams_per_s, max_peers=8)
        server = InferServer(self_peer_id=SRV, generate=generator, load=lambda: LOAD,
                             max_streams_per_peer=per_peer, stream_rate=rate)
        if servers is not None:
            servers.append(server)
        net.serve(SRV, wi.PROTOCOL_ID, server.handle)
        yield net, InferClient(net.opener(CLI), accept_timeout_s=ACCEPT_S), generator


async def ask(client: InferClient, rid: int = 1) -> tuple[wi.Accepted, list[TokenChunk | Done]]:
    async with client.request(SRV, request(rid)) as remote:
        return remote.accepted, [ev async for ev in remote.events()]


async def stream_into(client: InferClient, req: wi.InferRequest,
                      got: list[TokenChunk | Done]) -> None:
    """Append the answer's events to ``got`` as they arrive (kept if it then fails)."""
    async with client.request(SRV, req) as remote:
        async for ev in remote.events():
            got.append(ev)


async def read_message(stream: ByteStream) -> wi.Message:
    decoder = FrameDecoder(wi.MAX_INFER_FRAME_BYTES)
    frame = await receive_event(stream, decoder.feed, decoder.next_frame)
    assert isinstance(frame, dict)
    return wi.message_from_map(frame)


async def test_a_generation_streams_chunks_then_done(autojump_clock: trio.abc.Clock) -> None:
    async with serving(["Hel", "lo", 0.5, "!", DONE]) as (_, client, generator):
        start = trio.current_time()
        accepted, events = await ask(client)
    assert (accepted.served_by, accepted.model, accepted.load) == (SRV, "m", LOAD)
    *chunks, done = events
    assert all(isinstance(c, TokenChunk) for c in chunks)
    assert "".join(c.text for c in chunks if isinstance(c, TokenChunk)) == "Hello!"
    assert sum(c.n_tokens for c in chunks if isinstance(c, TokenChunk)) == 3
    assert isinstance(done, Done)
    assert (done.finish_reason, done.completion_tokens, done.model) == ("length", 3, "m")
    assert trio.current_time() - start == pytest.approx(0.5)
    assert generator.outcomes == ["done"]
    assert [peer for _, peer in generator.requests] == [CLI]  # the server knows who asked


async def test_the_done_frame_carries_the_servers_receipt(autojump_clock: trio.abc.Clock) -> None:
    done = Done(finish_reason="stop", prompt_tokens=4, completion_tokens=1, ttft_ms=1.0,
                total_ms=2.0, model="m", receipt="head.claims.sig")
    async with serving(["a", done]) as (_, client, _generator):
        _, events = await ask(client)
    assert events[-1] == done


async def test_leaving_mid_stream_stops_the_generation(autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", *[0.1, "b"] * 1000, DONE]) as (_, client, generator):
        async with client.request(SRV, request()) as remote, \
                aclosing(remote.events()) as events:
            assert await anext(events) == TokenChunk(text="a", n_tokens=1)
        with trio.fail_after(0.01):  # the reset reaches the server at once
            assert await generator.wait_outcomes(1) == ["stopped"]


async def test_a_peer_silent_after_accepting_yields_nothing_until_the_caller_gives_up(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", SILENT]) as (_, client, generator):
        got: list[TokenChunk | Done] = []
        with trio.move_on_after(30.0) as waited:
            await stream_into(client, request(), got)
        assert waited.cancelled_caught and got == [TokenChunk(text="a", n_tokens=1)]
        assert await generator.wait_outcomes(1) == ["stopped"]


async def test_a_peer_that_never_accepts_times_out(autojump_clock: trio.abc.Clock) -> None:
    async with serving([3600.0, "a", DONE]) as (_, client, _):
        start = trio.current_time()
        with pytest.raises(PeerTimeout) as err:
            await ask(client)
        assert err.value.peer_id == SRV and err.value.phase == "call"
        assert trio.current_time() - start == pytest.approx(ACCEPT_S)


async def test_a_silent_client_is_reset_after_the_request_read_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", DONE]) as (net, client, _):
        raw = await net.opener("mute").open_stream(SRV, wi.PROTOCOL_ID)
        start = trio.current_time()
        with pytest.raises(PeerConnectionLost) as err:
            await raw.receive_some()
        assert err.value.peer_id == SRV
        assert trio.current_time() - start == pytest.approx(REQUEST_READ_TIMEOUT_S)
        _, events = await ask(client)  # and the server still serves others
        assert isinstance(events[-1], Done)


@pytest.mark.parametrize(("garbage", "code"), [
    (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "bad_request"),        # not msgpack
    (struct.pack(">I", 2**31), "too_large"),                          # a 2 GiB frame
    (encode_frame({"t": "nope", "v": 1}), "bad_request"),             # unknown message
    (encode_frame(wi.message_to_map(wi.Cancel(request_id=1))), "bad_request"),  # out of turn
])
async def test_garbage_from_a_client_gets_an_error_frame_then_a_reset(
        autojump_clock: trio.abc.Clock, garbage: bytes, code: str) -> None:
    async with serving(["a", DONE]) as (net, client, generator):
        raw = await net.opener("mallory").open_stream(SRV, wi.PROTOCOL_ID)
        await raw.send_all(garbage)
        error = await read_message(raw)
        assert isinstance(error, wi.Error)
        assert (error.request_id, error.code, error.retryable) == (0, code, False)
        with pytest.raises(PeerConnectionLost):
            await raw.receive_some()
        assert generator.requests == []
        _, events = await ask(client)  # the server stays up
        assert isinstance(events[-1], Done)


def evil_server(reply: bytes, seen: list[str], finished: trio.Event
                ) -> Callable[[ByteStream], Awaitable[None]]:
    async def handle(stream: ByteStream) -> None:
        await stream.receive_some()  # the request
        await stream.send_all(reply)
        try:
            while await stream.receive_some():
                pass
            seen.append("closed")
        except PeerConnectionLost:
            seen.append("reset")
        finished.set()

    return handle


@pytest.mark.parametrize("reply", [
    struct.pack(">I", 3) + b"\xc1\xc1\xc1",
    encode_frame(wi.message_to_map(wi.Tokens(request_id=1, text="x", n_tokens=1))),  # no accept
    encode_frame(wi.message_to_map(wi.Accepted(request_id=9, served_by=SRV, model="m"))),
])
async def test_garbage_from_a_server_is_a_remote_protocol_error_and_resets_the_stream(
        autojump_clock: trio.abc.Clock, reply: bytes) -> None:
    seen: list[str] = []
    finished = trio.Event()
    async with open_memory_network() as net:
        net.serve(SRV, wi.PROTOCOL_ID, evil_server(reply, seen, finished))
        client = InferClient(net.opener(CLI), accept_timeout_s=ACCEPT_S)
        with pytest.raises(RemoteProtocolError):
            await ask(client)
        await finished.wait()
    assert seen == ["reset"]


async def test_too_many_streams_from_one_peer_are_refused_as_retryable(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", SILENT], per_peer=2) as (net, client, _):
        release = trio.Event()

        async def hold(rid: int, *, task_status: trio.TaskStatus[None]) -> None:
            async with client.request(SRV, request(rid)) as remote, \
                    aclosing(remote.events()) as events:
                await anext(events)
                task_status.started()
                await release.wait()

        async with trio.open_nursery() as nursery:
            await nursery.start(hold, 1)
            await nursery.start(hold, 2)
            with pytest.raises(InferenceRejected) as err:
                await ask(client, 3)
            refusal = err.value
            assert (refusal.code, refusal.retryable, refusal.retry_after_s, refusal.peer_id) \
                == ("too_many_streams", True, 0.2, SRV)
            other = InferClient(net.opener("another"), accept_timeout_s=ACCEPT_S)
            async with other.request(SRV, request(4)) as remote:  # a per-peer limit only
                assert remote.accepted.served_by == SRV
            release.set()
        await trio.testing.wait_all_tasks_blocked()  # the server has seen both resets
        async with client.request(SRV, request(5)) as remote:  # slots are given back
            assert remote.accepted.served_by == SRV


async def test_new_streams_over_the_per_peer_rate_are_refused_as_busy_with_retry_after(
        autojump_clock: trio.abc.Clock) -> None:
    servers: list[InferServer] = []
    async with serving(["a", DONE], streams_per_s=4, servers=servers) as (net, client, gen):
        for rid in range(1, 5):  # a burst of 4 at one instant is allowed
            _, events = await ask(client, rid)
            assert isinstance(events[-1], Done)
        with pytest.raises(InferenceRejected) as err:
            await ask(client, 5)
        refusal = err.value
        assert (refusal.code, refusal.retryable, refusal.peer_id) == ("busy", True, SRV)
        assert refusal.retry_after_s == pytest.approx(0.25)  # one stream at 4/s
        assert "4 new infer streams per second per peer" in refusal.message
        other = InferClient(net.opener("another"), accept_timeout_s=ACCEPT_S)
        _, events = await ask(other, 6)  # per peer: another peer is served
        assert isinstance(events[-1], Done)
        await trio.sleep(refusal.retry_after_s)
        _, events = await ask(client, 7)  # and the first again after its Retry-After
        assert isinstance(events[-1], Done)
    stats = servers[0].statistics()
    assert (stats.refused_stream_rate, stats.refused_too_many_streams) == (1, 0)
    assert gen.outcomes == ["done"] * 6  # the refused stream never reached the engine


async def test_a_refusal_before_accepting_reaches_the_client_as_inference_rejected(
        autojump_clock: trio.abc.Clock) -> None:
    busy = InferenceRejected("busy", "queue full", retryable=True, retry_after_s=2.0)
    async with serving([busy]) as (_, client, generator):
        with pytest.raises(InferenceRejected) as err:
            await ask(client)
    assert (err.value.code, err.value.retryable, err.value.retry_after_s, err.value.peer_id) \
        == ("busy", True, 2.0, SRV)
    assert "queue full" in err.value.message
    assert generator.outcomes == ["failed"]


async def test_an_engine_failure_mid_stream_becomes_an_error_frame(
        autojump_clock: trio.abc.Clock) -> None:
    failure = InferenceRejected("internal", "model file vanished", retryable=True)
    async with serving(["a", 1.0, failure]) as (_, client, _):
        got: list[TokenChunk | Done] = []
        with pytest.raises(InferenceRejected) as err:
            await stream_into(client, request(), got)
    assert got == [TokenChunk(text="a", n_tokens=1)]
    assert (err.value.code, err.value.retryable) == ("internal", True)


async def test_the_request_deadline_ends_the_generation_with_a_timeout_error(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(["a", 5.0, "b", DONE]) as (_, client, generator):
        start = trio.current_time()
        got: list[TokenChunk | Done] = []
        with pytest.raises(InferenceRejected) as err:
            await stream_into(client, request(deadline_ms=2000), got)
        assert got == [TokenChunk(text="a", n_tokens=1)]
        assert (err.value.code, err.value.retryable) == ("timeout", True)
        assert trio.current_time() - start == pytest.approx(2.0)
        assert await generator.wait_outcomes(1) == ["stopped"]
