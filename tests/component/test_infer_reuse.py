"""Reused infer streams (keep-alive, protocols/inference.md): a warm request skips the
stream open, a stream is kept only after a clean Done, older servers and dead kept
streams fall back to a new stream, and idle kept streams are closed on both sides."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import pytest
import trio
import trio.testing

from peerllm.events import Done, TokenChunk
from peerllm.p2p.infer import InferClient, InferServer, TokenSource
from peerllm.p2p.infer_client import ClientStreams
from peerllm.p2p.streams import ByteStream, receive_event
from peerllm.testing import DONE, MemoryNetwork, ScriptedGenerator, open_memory_network
from peerllm.wire import infer as wi
from peerllm.wire.framing import NEED_DATA

SRV, CLI = "srv", "cli"
SAMPLING = wi.Sampling(max_tokens=16, temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)


def request(rid: int) -> wi.InferRequest:
    return wi.InferRequest(request_id=rid, model="m", messages=None, prompt="hi",
                           sampling=SAMPLING, deadline_ms=60_000)


async def ask(client: InferClient, rid: int) -> str:
    async with client.request(SRV, request(rid)) as remote:
        events = [ev async for ev in remote.events()]
    assert isinstance(events[-1], Done)
    return "".join(ev.text for ev in events if isinstance(ev, TokenChunk))


def serve(net: MemoryNetwork, steps: list[object]) -> ScriptedGenerator:
    generator = ScriptedGenerator(steps)  # type: ignore[arg-type]
    server = InferServer(self_peer_id=SRV, generate=generator)
    net.serve(SRV, wi.PROTOCOL_ID, server.handle)
    return generator


def infer_streams(net: MemoryNetwork) -> int:
    return sum(1 for _, _, proto in net.opened if proto == wi.PROTOCOL_ID)


async def test_requests_one_after_another_share_one_stream(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        generator = serve(net, ["a", "b", DONE])
        client = InferClient(net.opener(CLI), accept_timeout_s=5)
        assert client.statistics() == ClientStreams(active=0, idle=0)
        assert [await ask(client, rid) for rid in (1, 2, 3)] == ["ab", "ab", "ab"]
        assert infer_streams(net) == 1
        assert client.statistics() == ClientStreams(active=0, idle=1)
        assert [req.request_id for req, _ in generator.requests] == [1, 2, 3]
        assert all(req.reuse for req, _ in generator.requests)
        assert client.idle_streams() == 1


async def test_leaving_early_resets_the_stream_and_stops_the_generation(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        generator = serve(net, ["a", 1.0, "b", DONE])
        client = InferClient(net.opener(CLI), accept_timeout_s=5)
        async with client.request(SRV, request(1)) as remote, \
                aclosing(remote.events()) as events:
            async for _ in events:
                assert client.statistics() == ClientStreams(active=1, idle=0)
                break  # the caller leaves after the first chunk
        assert client.statistics() == ClientStreams(active=0, idle=0)
        assert await generator.wait_outcomes(1) == ["stopped"]
        assert client.idle_streams() == 0  # a reset stream is never kept
        assert await ask(client, 2) == "ab"
        assert infer_streams(net) == 2


async def test_kept_streams_are_closed_after_the_idle_limit(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        serve(net, ["a", DONE])
        client = InferClient(net.opener(CLI), accept_timeout_s=5)
        await ask(client, 1)
        await trio.sleep(wi.REUSE_CLIENT_IDLE_S)
        assert await ask(client, 2) == "a"  # the old one was closed, a new one opened
        assert infer_streams(net) == 2
        await trio.sleep(wi.REUSE_IDLE_S + 1)  # the server closes its idle side too
        assert await ask(client, 3) == "a"


async def _one_shot_server(stream: ByteStream, *, agree: bool) -> None:
    """A server that answers one request and closes: an older node (``agree`` False),
    or one that agreed to reuse and then lost the stream anyway (``agree`` True)."""
    proto = wi.ServerStream()
    req = await receive_event(stream, proto.receive_data, proto.next_event)
    assert isinstance(req, wi.InferRequest)
    rid = req.request_id
    for msg in (wi.Accepted(request_id=rid, served_by=SRV, model="m", reuse=agree),
                wi.Tokens(request_id=rid, text="x", n_tokens=1),
                wi.Done(request_id=rid, finish_reason="stop", prompt_tokens=1,
                        completion_tokens=1, ttft_ms=1.0, total_ms=2.0)):
        await stream.send_all(proto.send(msg))
    await stream.aclose()


async def test_an_older_server_gets_a_new_stream_per_request(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        async def old(stream: ByteStream) -> None:
            await _one_shot_server(stream, agree=False)
        net.serve(SRV, wi.PROTOCOL_ID, old)
        client = InferClient(net.opener(CLI), accept_timeout_s=5)
        assert [await ask(client, rid) for rid in (1, 2)] == ["x", "x"]
        assert infer_streams(net) == 2 and client.idle_streams() == 0


async def test_a_kept_stream_that_died_is_replaced_without_failing_the_request(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        async def flaky(stream: ByteStream) -> None:
            await _one_shot_server(stream, agree=True)
        net.serve(SRV, wi.PROTOCOL_ID, flaky)
        client = InferClient(net.opener(CLI), accept_timeout_s=5)
        await ask(client, 1)
        assert client.idle_streams() == 1  # kept: the server said it would wait
        assert await ask(client, 2) == "x"  # it had closed: asked again on a new one
        assert infer_streams(net) == 2


async def test_without_idle_streams_every_request_opens_a_stream(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        generator = serve(net, ["a", DONE])
        client = InferClient(net.opener(CLI), accept_timeout_s=5, max_idle_per_peer=0)
        await ask(client, 1)
        await ask(client, 2)
        assert infer_streams(net) == 2
        assert not any(req.reuse for req, _ in generator.requests)


async def test_a_server_keeps_at_most_its_per_peer_limit_of_idle_streams(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        generator = ScriptedGenerator(["a", 1.0, DONE])
        server = InferServer(self_peer_id=SRV, generate=generator, max_streams_per_peer=2)
        net.serve(SRV, wi.PROTOCOL_ID, server.handle)
        client = InferClient(net.opener(CLI), accept_timeout_s=5, max_idle_per_peer=4)
        accepted: list[wi.Accepted] = []

        async def one(rid: int) -> None:
            async with client.request(SRV, request(rid)) as remote:
                accepted.append(remote.accepted)
                async for _ in remote.events():
                    pass

        async with trio.open_nursery() as nursery:
            for rid in (1, 2):
                nursery.start_soon(one, rid)
        assert all(a.reuse for a in accepted) and client.idle_streams() == 2
        async with trio.open_nursery() as nursery:  # two kept + one new: only 2 kept
            for rid in (3, 4):
                nursery.start_soon(one, rid)
        assert infer_streams(net) == 2



class _TakesThenWaits:
    """A server-side stream that, like py-libp2p's yamux, takes bytes out of its buffer
    and then waits (yamux: for its window lock) before returning them, so a read
    cancelled in that wait loses them. Its client sends request 1, and request 2 the
    moment our Done for request 1 goes out."""

    peer_id = CLI

    def __init__(self) -> None:
        self.client = wi.ClientStream()
        self.inbox = bytearray(self.client.send(dataclasses.replace(request(1), reuse=True)))
        self._arrived = trio.Event()
        self.seen: list[object] = []

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        while not self.inbox:
            await self._arrived.wait()
            self._arrived = trio.Event()
        data = bytes(self.inbox[:max_bytes])
        del self.inbox[:max_bytes]
        await trio.sleep(0.001)  # the window lock, held by the muxer's reader a moment
        return data

    async def send_all(self, data: bytes) -> None:
        self.client.receive_data(data)
        while (event := self.client.next_event()) is not NEED_DATA:
            self.seen.append(event)
            if isinstance(event, wi.Done) and event.request_id == 1:
                self.inbox += self.client.send(dataclasses.replace(request(2), reuse=True))
                self._arrived.set()
                await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        pass

    async def reset(self) -> None:
        pass


@pytest.mark.parametrize("exit_s", [0.0, 0.01])
async def test_a_next_request_arriving_with_our_done_is_not_lost(
        autojump_clock: trio.abc.Clock, exit_s: float) -> None:
    stream = _TakesThenWaits()
    scripted = ScriptedGenerator(["a", DONE])

    @asynccontextmanager
    async def generate(req: wi.InferRequest, peer: str) -> AsyncIterator[TokenSource]:
        async with scripted(req, peer) as items:
            yield items
        await trio.sleep(exit_s)  # after Done: an audit line, the engine's teardown

    server = InferServer(self_peer_id=SRV, generate=generate)
    with trio.move_on_after(wi.REUSE_IDLE_S / 2):
        await server.handle(stream)
    accepted = [e.request_id for e in stream.seen if isinstance(e, wi.Accepted)]
    assert accepted == [1, 2]
