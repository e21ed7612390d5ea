"""Registry and engine behaviour against a fake backend: queues, loads, eviction, cancellation.

The fake (peerllm.testing.FakeBackend) runs in real worker threads (as llama.cpp does) but
generates instantly-ish, so these tests check the trio side — limiters, shared loads, stop
events — without a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from peerllm.config import InferenceConfig
from peerllm.errors import (
    ConfigError,
    InferenceCancelled,
    InferenceTimeout,
    InvalidInferenceRequest,
    ModelBusy,
    ModelLoadError,
    ModelNotFound,
)
from peerllm.events import Done, TokenChunk
from peerllm.inference.backend import Embedded
from peerllm.inference.engine import Engine, GenerationRequest, GenerationStream, SamplingParams
from peerllm.inference.priority import Origin
from peerllm.inference.registry import ModelRegistry, open_registry
from peerllm.inference.specs import ModelSpec
from peerllm.testing import FakeBackend, fake_vector, write_fake_gguf
from tests.helpers import wait_until

MB = 1024**2


def gguf(path: Path, size: int = 1 * MB) -> Path:
    return write_fake_gguf(path, size)


def spec(model_id: str, path: Path, **kw: object) -> ModelSpec:
    return ModelSpec(id=model_id, path=path, context_size=512, **kw)  # type: ignore[arg-type]


CFG = InferenceConfig(warmup_tokens=4, max_queue=1, cache_size_gb=1.0)


@asynccontextmanager
async def engine_for(specs: list[ModelSpec], backend: FakeBackend,
                     config: InferenceConfig = CFG, **kw: object
                     ) -> AsyncIterator[tuple[Engine, ModelRegistry]]:
    async with open_registry(specs, config=config, backend=backend,
                             total_ram_bytes=16 * 1024 * MB, **kw) as registry:  # type: ignore[arg-type]
        yield Engine(registry), registry


def req(model: str = "a", *, max_tokens: int = 4, **kw: object) -> GenerationRequest:
    return GenerationRequest(model=model, prompt="one two three",
                             params=SamplingParams(max_tokens=max_tokens, **kw))  # type: ignore[arg-type]


async def test_complete_counts_and_statistics(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        text, done = await engine.complete(req(max_tokens=3))
        assert text == "t0 t1 t2 "
        assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("length", 4, 3)
        assert done.model == "a" and done.ttft_ms is not None and done.total_ms >= done.ttft_ms
        st = reg.status("a")
        assert (st.state, st.requests, st.tokens_generated, st.active, st.queued) == (
            "loaded", 1, 3, 0, 0)
        assert st.tokens_per_second is not None and st.load_seconds is not None
        assert st.memory_bytes == reg.reserved_bytes > 0


async def test_benchmark_after_load_sets_throughput(tmp_path: Path) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (_, reg):
        assert reg.status("a").state == "available"
        assert reg.status("a").tokens_per_second is None
        st = await reg.load("a")
        assert (st.state, st.tokens_per_second) == ("loaded", 42.0)
        assert (await reg.warmup("a", 8)).tokens_per_second == 42.0


async def test_concurrent_loads_share_one(tmp_path: Path) -> None:
    backend = FakeBackend(open_s=0.5)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (_, reg):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(reg.load, "a")
            await wait_until(lambda: reg.status("a").state == "loading", what="loading")
        assert len(backend.opened) == 1


async def test_unknown_model(tmp_path: Path) -> None:
    async with engine_for([], FakeBackend()) as (engine, reg):
        with pytest.raises(ModelNotFound):
            reg.status("nope")
        with pytest.raises(ModelNotFound):
            async with engine.stream(req("nope")):
                pass


@pytest.mark.parametrize("config", [InferenceConfig(preload=("x",)),
                                    InferenceConfig(default_model="x")])
async def test_unknown_model_in_config_is_a_config_error(config: InferenceConfig) -> None:
    with pytest.raises(ConfigError, match="unknown model 'x'"):
        async with engine_for([], FakeBackend(), config):
            pass


async def test_default_model(tmp_path: Path) -> None:
    specs = [spec(n, gguf(tmp_path / f"{n}.gguf")) for n in "ab"]
    async with engine_for(specs, FakeBackend()) as (_, reg):
        assert reg.default_model_id == "a"
    async with engine_for(specs, FakeBackend(), InferenceConfig(default_model="b")) as (_, reg):
        assert reg.default_model_id == "b"


async def test_preload_starts_in_background(tmp_path: Path) -> None:
    specs = [spec("a", gguf(tmp_path / "a.gguf"), preload=True),
             spec("b", gguf(tmp_path / "b.gguf"))]
    async with engine_for(specs, FakeBackend()) as (_, reg):
        assert reg.status("a").state == "loading"
        await reg.load("a")
        assert [s.state for s in reg.list()] == ["loaded", "available"]


async def test_full_queue_raises_busy_at_once(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()  # generation blocks until the test lets it go
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        await reg.load("a")
        async with engine.stream(req()) as first, engine.stream(req()) as second:
            while reg.status("a").active == 0:
                await trio.sleep(0.005)
            st = reg.status("a")
            assert (st.active, st.queued) == (1, 1)
            with pytest.raises(ModelBusy) as info:
                async with engine.stream(req()):
                    pass
            assert info.value.model_id == "a" and info.value.retry_after_s > 0
            backend.gate.set()
            for stream in (first, second):
                items = [i async for i in stream]
                assert "".join(i.text for i in items if isinstance(i, TokenChunk)) == "t0 t1 t2 t3 "
                done = items[-1]
                assert isinstance(done, Done)
                assert (done.finish_reason, done.completion_tokens) == ("length", 4)
        assert (reg.status("a").active, reg.status("a").queued) == (0, 0)


def prompt_req(prompt: str, *, max_tokens: int = 2) -> GenerationRequest:
    return GenerationRequest(model="a", prompt=prompt,
                             params=SamplingParams(max_tokens=max_tokens))


async def wait_generating(backend: FakeBackend, n: int) -> None:
    await wait_until(lambda: len(backend.prompts) >= n, what=f"{n} generation(s) started")


async def enter_in_order(stack: AsyncExitStack, engine: Engine, prompts: list[str],
                         origin: Origin) -> list[GenerationStream]:
    """Start the streams one after another, each queued before the next starts (trio
    may run newly spawned tasks in any order)."""
    streams = []
    for prompt in prompts:
        streams.append(await stack.enter_async_context(
            engine.stream(prompt_req(prompt), origin=origin)))
        await trio.testing.wait_all_tasks_blocked()
    return streams


async def test_our_own_requests_run_before_the_peers_queued_ahead_of_them(
        tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()
    config = InferenceConfig(warmup_tokens=0, max_queue=8, cache_size_gb=1.0)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend, config) \
            as (engine, reg), AsyncExitStack() as stack:
        await reg.load("a")
        streams = await enter_in_order(stack, engine, ["peer0", "peer1", "peer2"], "peer")
        await wait_generating(backend, 1)
        streams += await enter_in_order(stack, engine, ["local"], "local")
        assert (reg.status("a").active, reg.status("a").queued) == (1, 3)
        backend.gate.set()
        for stream in streams:
            assert isinstance([i async for i in stream][-1], Done)
    assert backend.prompts == ["peer0", "local", "peer1", "peer2"]


async def test_peers_filling_the_queue_never_make_our_own_request_busy(
        tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()
    config = InferenceConfig(warmup_tokens=0, max_queue=1, cache_size_gb=1.0)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend, config) \
            as (engine, reg), AsyncExitStack() as stack:
        await reg.load("a")
        # One running, one queued: the queue is full for peers...
        await enter_in_order(stack, engine, ["peer0", "peer1"], "peer")
        with pytest.raises(ModelBusy):
            await stack.enter_async_context(engine.stream(prompt_req("peer2"), origin="peer"))
        # ...but ours are counted on their own, against a queue of the same size.
        local = await enter_in_order(stack, engine, ["local0", "local1"], "local")
        with pytest.raises(ModelBusy):
            await stack.enter_async_context(engine.stream(prompt_req("local2")))
        assert (reg.status("a").active, reg.status("a").queued) == (1, 3)
        backend.gate.set()
        for stream in local:
            assert isinstance([i async for i in stream][-1], Done)
    assert backend.prompts[:3] == ["peer0", "local0", "local1"]


async def test_peer_share_keeps_slots_for_our_own_requests(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()
    config = InferenceConfig(warmup_tokens=0, max_concurrent=2, peer_share=0.5,
                             cache_size_gb=1.0)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend, config) \
            as (engine, reg), AsyncExitStack() as stack:
        await reg.load("a")
        await enter_in_order(stack, engine, ["peer0", "peer1"], "peer")
        await wait_generating(backend, 1)
        await enter_in_order(stack, engine, ["local"], "local")
        await wait_generating(backend, 2)
        # One slot for peers: the second peer waits although the engine runs two at once.
        assert backend.prompts == ["peer0", "local"]
        assert (reg.status("a").active, reg.status("a").queued) == (2, 1)
        backend.gate.set()


async def test_leaving_the_stream_stops_generation_at_the_next_token(tmp_path: Path) -> None:
    backend = FakeBackend(token_s=0.002)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        async with engine.stream(req(max_tokens=32_768)) as stream:
            chunks = [await stream.__anext__() for _ in range(3)]
        assert all(isinstance(c, TokenChunk) for c in chunks)
        instance = backend.opened[0]
        # The thread is done (the block waited for it) and stopped within a few tokens:
        # the channel holds at most 16 chunks, plus the one in flight.
        assert instance.generated < 3 + 16 + 3
        assert reg.status("a").active == 0
        _, done = await engine.complete(req(max_tokens=2))
        assert done.completion_tokens == 2


async def test_cancelled_scope_stops_generation(tmp_path: Path) -> None:
    backend = FakeBackend(token_s=0.002)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        with trio.move_on_after(0.1):
            await engine.complete(req(max_tokens=32_768))
        assert reg.status("a").active == 0
        assert backend.opened[0].generated < 1000


async def test_stream_cancel_ends_with_done_cancelled(tmp_path: Path) -> None:
    backend = FakeBackend(token_s=0.002)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, _):
        async with engine.stream(req(max_tokens=32_768)) as stream:
            items = []
            async for item in stream:
                items.append(item)
                if len(items) == 2:
                    stream.cancel()
        done = items[-1]
        assert isinstance(done, Done) and done.finish_reason == "cancelled"
        assert 2 <= done.completion_tokens < 100


async def test_consumer_error_comes_out_unwrapped(tmp_path: Path) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (engine, _):
        async def fail_inside() -> None:
            async with engine.stream(req()) as stream:
                await stream.__anext__()
                raise KeyError("mine")

        with pytest.raises(KeyError, match="mine"):
            await fail_inside()


async def test_inference_timeout(tmp_path: Path) -> None:
    backend = FakeBackend(token_s=0.002)
    config = InferenceConfig(inference_timeout_s=0.1, warmup_tokens=0)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend, config) as (engine, reg):
        await reg.load("a")
        with pytest.raises(InferenceTimeout) as info:
            await engine.complete(req(max_tokens=32_768))
        assert info.value.timeout_s == 0.1
        assert reg.status("a").active == 0


async def test_load_failures_leave_the_registry_usable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"<html>not a model</html>")
    specs = [spec("good", gguf(tmp_path / "g.gguf")), spec("missing", tmp_path / "nope.gguf"),
             spec("junk", junk), spec("dir", tmp_path)]
    async with engine_for(specs, FakeBackend()) as (engine, reg):
        with pytest.raises(ModelLoadError, match="no such file"):
            await reg.load("missing")
        with pytest.raises(ModelLoadError, match="not a GGUF file"):
            await engine.complete(req("junk"))
        with pytest.raises(ModelLoadError, match="directory"):
            await reg.load("dir")
        st = reg.status("junk")
        assert st.state == "failed" and st.error is not None and "GGUF" in st.error
        assert reg.reserved_bytes == 0
        _, done = await engine.complete(req("good"))
        assert done.completion_tokens == 4


async def test_load_timeout(tmp_path: Path) -> None:
    backend = FakeBackend()
    slow = gguf(tmp_path / "slow.gguf")
    backend.hang_paths.add(slow)
    config = InferenceConfig(load_timeout_s=0.1)
    async with engine_for([spec("slow", slow), spec("ok", gguf(tmp_path / "ok.gguf"))],
                          backend, config) as (_, reg):
        with pytest.raises(ModelLoadError, match="timed out"):
            await reg.load("slow")
        assert reg.status("slow").state == "failed"
        assert (await reg.load("ok")).state == "loaded"


async def test_idle_model_evicted_lru(tmp_path: Path) -> None:
    # Each model needs ~1.2 x 100 MiB + KV; the 0.3 GiB budget holds two, not three.
    specs = [spec(n, gguf(tmp_path / f"{n}.gguf", 100 * MB)) for n in "abc"]
    config = InferenceConfig(cache_size_gb=0.3, warmup_tokens=0)
    backend = FakeBackend()
    async with engine_for(specs, backend, config) as (engine, reg):
        await reg.load("a")
        await reg.load("b")
        await engine.complete(req("a"))  # a is now the most recently used
        await reg.load("c")
        assert [s.state for s in reg.list()] == ["loaded", "available", "loaded"]
        assert [i.closed for i in backend.opened] == [False, True, False]
        assert reg.reserved_bytes <= reg.budget_bytes


@pytest.mark.parametrize(("policy", "evicted"), [("fifo", "a"), ("lfu", "b")])
async def test_other_eviction_policies(tmp_path: Path, policy: str, evicted: str) -> None:
    specs = [spec(n, gguf(tmp_path / f"{n}.gguf", 100 * MB)) for n in "abc"]
    config = InferenceConfig(cache_size_gb=0.3, warmup_tokens=0, eviction_policy=policy)  # type: ignore[arg-type]
    async with engine_for(specs, FakeBackend(), config) as (engine, reg):
        await reg.load("a")
        await reg.load("b")
        await engine.complete(req("a"))
        await reg.load("c")
        assert reg.status(evicted).state == "available"


async def test_busy_model_is_not_evicted(tmp_path: Path) -> None:
    specs = [spec(n, gguf(tmp_path / f"{n}.gguf", 200 * MB)) for n in "ab"]
    backend = FakeBackend()
    backend.gate.clear()
    config = InferenceConfig(cache_size_gb=0.3, warmup_tokens=0)
    async with engine_for(specs, backend, config) as (engine, reg):
        await reg.load("a")
        async with engine.stream(req("a")):
            with pytest.raises(ModelLoadError, match="busy"):
                await reg.load("b")
            backend.gate.set()
        assert (await reg.load("b")).state == "loaded"
        assert reg.status("a").state == "available"


async def test_model_bigger_than_the_budget(tmp_path: Path) -> None:
    huge = spec("huge", gguf(tmp_path / "huge.gguf", 2048 * MB))
    async with engine_for([huge], FakeBackend(), InferenceConfig(cache_size_gb=1.0)) as (_, reg):
        with pytest.raises(ModelLoadError, match="budget"):
            await reg.load("huge")


async def test_variant_picked_by_available_memory(tmp_path: Path) -> None:
    variants = (("Q8_0", gguf(tmp_path / "m.Q8_0.gguf", 300 * MB)),
                ("Q4_K_M", gguf(tmp_path / "m.Q4_K_M.gguf", 150 * MB)),
                ("Q2_K", tmp_path / "missing.Q2_K.gguf"))
    m = ModelSpec(id="m", variants=variants, context_size=512)
    async with engine_for([m], FakeBackend(), available_ram=lambda: 250 * MB) as (_, reg):
        st = await reg.load("m")
        assert (st.quant, st.path) == ("Q4_K_M", tmp_path / "m.Q4_K_M.gguf")
    async with engine_for([m], FakeBackend(), available_ram=lambda: 64 * 1024 * MB) as (_, reg):
        assert (await reg.load("m")).quant == "Q8_0"
    async with engine_for([m], FakeBackend(), available_ram=lambda: 100 * MB) as (_, reg):
        with pytest.raises(ModelLoadError, match="no variant fits"):
            await reg.load("m")


async def test_unload_frees_and_a_request_reloads(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        await reg.load("a")
        await reg.unload("a")
        assert reg.status("a").state == "available" and reg.reserved_bytes == 0
        assert backend.opened[0].closed
        await reg.unload("a")  # idempotent
        await engine.complete(req())
        assert len(backend.opened) == 2 and reg.status("a").state == "loaded"


async def test_unload_waits_for_the_running_request(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        await reg.load("a")
        async with engine.stream(req()) as stream, trio.open_nursery() as nursery:
            while reg.status("a").active == 0:
                await trio.sleep(0.005)
            nursery.start_soon(reg.unload, "a")
            # Detached at once, while the request still runs:
            await wait_until(lambda: reg.status("a").state == "available", what="detached")
            assert not backend.opened[0].closed  # still generating
            backend.gate.set()
            assert isinstance([i async for i in stream][-1], Done)
        assert backend.opened[0].closed


async def test_embeddings(tmp_path: Path) -> None:
    backend = FakeBackend()
    specs = [spec("a", gguf(tmp_path / "a.gguf")),
             spec("e", gguf(tmp_path / "e.gguf"), type="embedding")]
    async with engine_for(specs, backend) as (engine, reg):
        got = await engine.embed("a", ["x", "yy z"])
        assert got == Embedded(vectors=[fake_vector("x"), fake_vector("yy z")],
                               prompt_tokens=2 + 3, input_tokens=(2, 3))
        # A generative model gets a second, embedding context next to its generator.
        assert [i.options.embedding for i in backend.opened] == [False, True]
        assert await engine.embed("e", []) == Embedded(vectors=[], prompt_tokens=0)
        with pytest.raises(InvalidInferenceRequest, match="embedding model"):
            await engine.complete(req("e"))
        with pytest.raises(TypeError):
            await engine.embed("a", "not a list")
        assert reg.status("e").type == "embedding"


async def test_closed_registry_refuses_requests(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        await reg.load("a")
        await reg.aclose()
        assert backend.opened[0].closed and reg.reserved_bytes == 0
        with pytest.raises(InferenceCancelled):
            async with engine.stream(req()):
                pass


async def test_a_consumer_that_stops_reading_does_not_outlive_the_inference_timeout(
        tmp_path: Path) -> None:
    # The thread waits for room while the consumer sleeps; the timeout must still end
    # the generation and free the model's slot (the wait polls the stop check).
    backend = FakeBackend(token_s=0.001)
    config = InferenceConfig(inference_timeout_s=0.2, warmup_tokens=0)
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend, config) as (engine, reg):
        await reg.load("a")
        async with engine.stream(req(max_tokens=32_768)) as stream:
            await stream.__anext__()
            await wait_until(lambda: reg.status("a").active == 0, timeout_s=3,
                             what="the timed-out generation to free its slot")

