"""EmbedServer and EmbedClient over in-memory streams on a virtual clock: a whole
/peerllm/embed exchange, refusals as error frames, per-peer limits, deadlines, and
hostile clients and servers."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from peerllm.errors import InferenceRejected, PeerConnectionLost, PeerTimeout, RemoteProtocolError
from peerllm.p2p.embed import EmbedAnswer, EmbedClient, EmbedServer
from peerllm.p2p.infer import REQUEST_READ_TIMEOUT_S
from peerllm.p2p.streams import ByteStream, receive_event
from peerllm.testing import MemoryNetwork, open_memory_network
from peerllm.wire import embed as we
from peerllm.wire.framing import encode_frame

SRV, CLI = "srv", "cli"


def request(rid: int = 1, inputs: tuple[str, ...] = ("a", "bb"), deadline_ms: int = 10_000
            ) -> we.EmbedRequest:
    return we.EmbedRequest(request_id=rid, model="m", inputs=inputs, deadline_ms=deadline_ms,
                           auth="the.delegation.jwt")


class Embedder:
    """Vectors [len(text), 1.0]; optionally held at ``gate``, or raising ``error``."""

    def __init__(self, *, error: InferenceRejected | None = None, hold: bool = False,
                 sleep_s: float = 0.0, vectors: list[list[float]] | None = None) -> None:
        self.error = error
        self.gate = trio.Event()
        if not hold:
            self.gate.set()
        self.sleep_s = sleep_s
        self.vectors = vectors
        self.seen: list[tuple[we.EmbedRequest, str]] = []

    async def __call__(self, req: we.EmbedRequest, peer: str) -> EmbedAnswer:
        self.seen.append((req, peer))
        await self.gate.wait()
        await trio.sleep(self.sleep_s)
        if self.error is not None:
            raise self.error
        return EmbedAnswer(vectors=self.vectors or [[float(len(t)), 1.0] for t in req.inputs],
                           prompt_tokens=7, receipt="r.e.c")


@asynccontextmanager
async def serving(embedder: Embedder, *, per_peer: int = 8
                  ) -> AsyncIterator[tuple[MemoryNetwork, EmbedClient, EmbedServer]]:
    async with open_memory_network() as net:
        server = EmbedServer(self_peer_id=SRV, embed=embedder, max_streams_per_peer=per_peer)
        net.serve(SRV, we.PROTOCOL_ID, server.handle)
        yield net, EmbedClient(net.opener(CLI)), server


async def test_one_request_one_answer(autojump_clock: trio.abc.Clock) -> None:
    embedder = Embedder()
    async with serving(embedder) as (_, client, server):
        got = await client.embed(SRV, request())
        assert got == EmbedAnswer(vectors=[[1.0, 1.0], [2.0, 1.0]], prompt_tokens=7,
                                  receipt="r.e.c")
        assert embedder.seen == [(request(), CLI)]  # auth and all, from the asking peer
        assert server.active_streams == 0


async def test_a_refusal_is_an_error_frame(autojump_clock: trio.abc.Clock) -> None:
    no = InferenceRejected("forbidden", "forbidden: not this model", retryable=False)
    async with serving(Embedder(error=no)) as (_, client, _):
        with pytest.raises(InferenceRejected) as err:
            await client.embed(SRV, request())
        assert (err.value.code, err.value.retryable, err.value.peer_id) == \
            ("forbidden", False, SRV)
        assert err.value.message == f"peer {SRV}: forbidden: not this model"


async def test_a_model_that_loses_a_vector_is_an_internal_error(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(Embedder(vectors=[[1.0]])) as (_, client, _):
        with pytest.raises(InferenceRejected) as err:
            await client.embed(SRV, request())
        assert (err.value.code, err.value.retryable) == ("internal", True)
        assert "1 vectors for 2 inputs" in err.value.message


async def test_the_deadline_is_a_timeout_error(autojump_clock: trio.abc.Clock) -> None:
    async with serving(Embedder(sleep_s=60.0)) as (_, client, _):
        start = trio.current_time()
        with pytest.raises(InferenceRejected) as err:
            await client.embed(SRV, request(deadline_ms=2_000))
        assert (err.value.code, err.value.retryable) == ("timeout", True)
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_too_many_streams_from_one_peer_are_refused_retryably(
        autojump_clock: trio.abc.Clock) -> None:
    embedder = Embedder(hold=True)
    async with serving(embedder, per_peer=1) as (_, client, server), trio.open_nursery() as n:
        got: list[EmbedAnswer] = []

        async def first() -> None:
            got.append(await client.embed(SRV, request(1)))

        n.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        assert server.active_streams == 1
        with pytest.raises(InferenceRejected) as err:
            await client.embed(SRV, request(2))
        assert (err.value.code, err.value.retryable, err.value.retry_after_s) == \
            ("too_many_streams", True, 0.2)
        embedder.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == 1 and server.statistics().refused_too_many_streams == 1


async def read_answer(raw: ByteStream) -> we.Message:
    side = we.ClientSide()
    side.request = request()  # what we claim to have asked, so the answer is checked
    event = await receive_event(raw, side.receive_data, side.next_event)
    assert not isinstance(event, type)
    return event


@pytest.mark.parametrize(("garbage", "code"), [
    (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "bad_request"),  # not msgpack
    (struct.pack(">I", 2**31), "too_large"),  # a 2 GiB frame
    (encode_frame({"v": 1, "t": "embed", "id": 1, "model": "m", "inputs": [],
                   "deadline_ms": 5}), "bad_request"),
])
async def test_garbage_from_a_client_gets_an_error_frame_then_a_reset(
        autojump_clock: trio.abc.Clock, garbage: bytes, code: str) -> None:
    embedder = Embedder()
    async with serving(embedder) as (net, client, _):
        raw = await net.opener("mallory").open_stream(SRV, we.PROTOCOL_ID)
        await raw.send_all(garbage)
        error = await read_answer(raw)
        assert isinstance(error, we.Error)
        assert (error.request_id, error.code, error.retryable) == (0, code, False)
        with pytest.raises(PeerConnectionLost):
            await raw.receive_some()
        assert embedder.seen == []
        assert len((await client.embed(SRV, request())).vectors) == 2  # still serving


async def test_a_mute_client_is_dropped_after_the_read_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    async with serving(Embedder()) as (net, _, _):
        raw = await net.opener("mute").open_stream(SRV, we.PROTOCOL_ID)
        start = trio.current_time()
        with pytest.raises(PeerConnectionLost):
            await raw.receive_some()
        assert trio.current_time() - start == pytest.approx(REQUEST_READ_TIMEOUT_S)


def server_answering(frame: bytes) -> object:
    async def handler(stream: ByteStream) -> None:
        side = we.ServerSide()
        await receive_event(stream, side.receive_data, side.next_event)
        if frame:
            await stream.send_all(frame)
            await trio.sleep_forever()
        await stream.aclose()
    return handler


def answer_frame(**changes: object) -> bytes:
    dims, data = we.pack_vectors([[1.0], [2.0]])
    m = we.message_to_map(we.Embeddings(request_id=1, served_by=SRV, model="m", dims=dims,
                                        vectors=data, prompt_tokens=1))
    return encode_frame({**m, **changes}, max_frame_bytes=we.MAX_ANSWER_FRAME_BYTES)


@pytest.mark.parametrize("frame", [
    answer_frame(id=9),  # another request's answer
    answer_frame(vectors=struct.pack("<3f", 1, 2, 3)),  # 3 vectors for 2 inputs
    struct.pack(">I", 3) + b"\xc1\xc1\xc1",
])
async def test_a_bad_answer_is_a_remote_protocol_error(autojump_clock: trio.abc.Clock,
                                                       frame: bytes) -> None:
    async with open_memory_network() as net:
        net.serve(SRV, we.PROTOCOL_ID, server_answering(frame))  # type: ignore[arg-type]
        with pytest.raises(RemoteProtocolError):
            await EmbedClient(net.opener(CLI)).embed(SRV, request())


async def test_a_server_that_closes_without_an_answer_lost_the_request(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        net.serve(SRV, we.PROTOCOL_ID, server_answering(b""))  # type: ignore[arg-type]
        with pytest.raises(PeerConnectionLost):
            await EmbedClient(net.opener(CLI)).embed(SRV, request())


async def test_a_silent_server_times_out_after_the_deadline_and_a_grace(
        autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network() as net:
        net.serve(SRV, we.PROTOCOL_ID, server_answering(b"\0"))  # type: ignore[arg-type]
        start = trio.current_time()
        with pytest.raises(PeerTimeout):
            await EmbedClient(net.opener(CLI)).embed(SRV, request(deadline_ms=1000))
        assert trio.current_time() - start == pytest.approx(1.0 + 5.0)
