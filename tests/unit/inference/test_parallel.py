"""The ``parallel`` setting: a batched model runs its slots on one context, its queue and
memory count the slots, node capacity sees them (fake backend, no model)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from peerllm.config import InferenceConfig
from peerllm.config.inference import AUTO_PARALLEL
from peerllm.errors import ConfigError, ModelBusy
from peerllm.events import Done
from peerllm.inference.engine import Engine, GenerationRequest, SamplingParams
from peerllm.inference.memory import estimate_memory_bytes
from peerllm.inference.registry import ModelRegistry, open_registry
from peerllm.inference.slots import (
    provisional_parallel,
    requested_parallel,
    resolve_parallel,
    slots_for,
)
from peerllm.inference.specs import ModelSpec, parse_models_config
from peerllm.testing import FakeBackend, write_fake_gguf

MB = 1024**2
BATCHED = InferenceConfig(warmup_tokens=0, max_queue=0, cache_size_gb=1.0, parallel=3)


@asynccontextmanager
async def registry_for(spec: ModelSpec, backend: FakeBackend, config: InferenceConfig
                       ) -> AsyncIterator[tuple[Engine, ModelRegistry]]:
    async with open_registry([spec], config=config, backend=backend,
                             total_ram_bytes=16 * 1024 * MB) as registry:
        yield Engine(registry), registry


def request() -> GenerationRequest:
    return GenerationRequest(model="a", prompt="hi", params=SamplingParams(max_tokens=2))


async def test_a_batched_model_serves_its_slots_from_one_context(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()  # generation blocks until the test lets it go
    spec = ModelSpec(id="a", path=write_fake_gguf(tmp_path / "a.gguf", MB), context_size=512)
    async with registry_for(spec, backend, BATCHED) as (engine, registry):
        await registry.load("a")
        async with AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(engine.stream(request()))
                       for _ in range(3)]
            while registry.status("a").active < 3:
                await trio.sleep(0.005)
            # A queue beyond the slots (max_queue 0 here) is still ModelBusy.
            with pytest.raises(ModelBusy):
                async with engine.stream(request()):
                    pass
            backend.gate.set()
            for stream in streams:
                items = [item async for item in stream]
                assert isinstance(items[-1], Done) and items[-1].completion_tokens == 2
        generators = [i for i in backend.opened if not i.options.embedding]
        assert len(generators) == 1 and generators[0].options.parallel == 3
        assert registry.concurrency("a") == 3
        # The KV cache of every slot is in the memory estimate.
        assert registry.status("a").memory_bytes == estimate_memory_bytes(
            MB, 512, contexts=3)
        assert (registry.status("a").active, registry.status("a").queued) == (0, 0)


async def test_parallel_1_keeps_one_context_per_request(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()
    spec = ModelSpec(id="a", path=write_fake_gguf(tmp_path / "a.gguf", MB), context_size=512)
    config = InferenceConfig(warmup_tokens=0, max_queue=0, cache_size_gb=1.0,
                             max_concurrent=2)
    async with registry_for(spec, backend, config) as (engine, registry):
        await registry.load("a")
        async with engine.stream(request()) as one, engine.stream(request()) as two:
            while registry.status("a").active < 2:
                await trio.sleep(0.005)
            backend.gate.set()
            for stream in (one, two):
                assert [item async for item in stream]
        assert [i.options.parallel for i in backend.opened] == [1, 1]
        assert registry.concurrency("a") == 2


def test_the_spec_overrides_the_default_and_embeddings_are_not_batched(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    cfg = InferenceConfig(parallel=4, max_concurrent=2)
    assert requested_parallel(ModelSpec(id="a", path=path), cfg) == 4
    assert requested_parallel(ModelSpec(id="a", path=path, parallel=1), cfg) == 1
    embed = ModelSpec(id="e", path=path, type="embedding", parallel=8)
    assert requested_parallel(embed, cfg) == 1
    assert slots_for(4, cfg) == 4 and slots_for(1, cfg) == 2  # 1: max_concurrent contexts


def test_auto_is_the_default_and_counts_what_the_backend_can_batch(tmp_path: Path) -> None:
    spec = ModelSpec(id="a", path=tmp_path / "m.gguf")
    cfg = InferenceConfig()
    assert cfg.parallel == "auto" and requested_parallel(spec, cfg) == "auto"
    assert provisional_parallel(spec, cfg, max_parallel=64) == AUTO_PARALLEL
    assert provisional_parallel(spec, cfg, max_parallel=1) == 1
    assert provisional_parallel(spec, InferenceConfig(parallel=8), max_parallel=1) == 8


def test_auto_takes_the_slots_the_memory_holds(tmp_path: Path) -> None:
    spec = ModelSpec(id="a", path=tmp_path / "m.gguf", context_size=512)
    cfg = InferenceConfig()
    one = estimate_memory_bytes(MB, 512, contexts=1)
    two = estimate_memory_bytes(MB, 512, contexts=2)

    def resolve(limit: int, max_parallel: int = 64) -> int:
        return resolve_parallel(spec, cfg, max_parallel=max_parallel, file_bytes=MB,
                                limit_bytes=limit)

    assert resolve(10**12) == AUTO_PARALLEL
    assert resolve(10**12, max_parallel=2) == 2
    assert resolve(two) == 2 and resolve(two - 1) == 1
    assert resolve(one - 1) == 1  # at least one, whether or not it fits (reserve decides)
    assert resolve_parallel(spec, InferenceConfig(parallel=6), max_parallel=1,
                            file_bytes=MB, limit_bytes=one) == 6  # asked for: as asked


async def test_a_fake_backend_that_cannot_batch_resolves_auto_to_one(tmp_path: Path) -> None:
    backend = FakeBackend()
    spec = ModelSpec(id="a", path=write_fake_gguf(tmp_path / "a.gguf", MB), context_size=512)
    config = InferenceConfig(warmup_tokens=0, max_queue=0, cache_size_gb=1.0)
    async with registry_for(spec, backend, config) as (_, registry):
        assert registry.concurrency("a") == 1
        await registry.load("a")
        assert registry.concurrency("a") == 1
        assert [i.options.parallel for i in backend.opened] == [1]


async def test_auto_resolves_at_load_within_the_budget_and_the_limiter_follows(
        tmp_path: Path) -> None:
    backend = FakeBackend(max_parallel=64)
    backend.gate.clear()
    spec = ModelSpec(id="a", path=write_fake_gguf(tmp_path / "a.gguf", MB), context_size=512)
    budget = estimate_memory_bytes(MB, 512, contexts=2) + MB // 2  # room for 2 slots, not 3
    config = InferenceConfig(warmup_tokens=0, max_queue=0, cache_size_gb=budget / 1024**3)
    async with registry_for(spec, backend, config) as (engine, registry):
        assert registry.concurrency("a") == AUTO_PARALLEL  # provisional, before the load
        await registry.load("a")
        assert registry.concurrency("a") == 2 and registry.status("a").parallel == 2
        assert [i.options.parallel for i in backend.opened] == [2]
        assert registry.status("a").memory_bytes == estimate_memory_bytes(MB, 512, contexts=2)
        async with engine.stream(request()) as one, engine.stream(request()) as two:
            while registry.status("a").active < 2:
                await trio.sleep(0.005)
            with pytest.raises(ModelBusy):  # 2 slots, no queue: the third is busy
                async with engine.stream(request()):
                    pass
            backend.gate.set()
            for stream in (one, two):
                assert isinstance([item async for item in stream][-1], Done)



async def test_requests_admitted_before_auto_resolves_lower_open_no_extra_contexts(
        tmp_path: Path) -> None:
    # Four requests take the provisional AUTO_PARALLEL slots while the model loads; the
    # memory holds one context, so the load resolves 1 slot. The three beyond it must
    # wait for that context, not open one each past the memory reservation.
    backend = FakeBackend(max_parallel=64, open_s=0.2)
    spec = ModelSpec(id="a", path=write_fake_gguf(tmp_path / "a.gguf", MB), context_size=512)
    budget = estimate_memory_bytes(MB, 512, contexts=1) + MB // 2  # 1 slot, not 2
    config = InferenceConfig(warmup_tokens=0, max_queue=0, cache_size_gb=budget / 1024**3)
    async with registry_for(spec, backend, config) as (engine, registry):
        assert registry.concurrency("a") == AUTO_PARALLEL
        done: list[Done] = []

        async def one() -> None:
            _, finished = await engine.complete(request())
            done.append(finished)

        async with trio.open_nursery() as nursery:
            for _ in range(AUTO_PARALLEL):
                nursery.start_soon(one)
        assert registry.concurrency("a") == 1
        assert len(done) == AUTO_PARALLEL
        assert len(backend.opened) == 1, [i.options for i in backend.opened]


def test_models_yaml_takes_parallel_per_model(tmp_path: Path) -> None:
    specs = parse_models_config({"available": [{"id": "a", "path": "a.gguf", "parallel": 4},
                                               {"id": "b", "path": "b.gguf"}]},
                                base_dir=tmp_path)
    assert [s.parallel for s in specs] == [4, None]
    (auto,) = parse_models_config({"available": [{"id": "a", "path": "a.gguf",
                                                  "parallel": "Auto"}]}, base_dir=tmp_path)
    assert auto.parallel == "auto"
    with pytest.raises(ConfigError) as info:
        parse_models_config({"available": [{"id": "a", "path": "a.gguf", "parallel": 0}]},
                            base_dir=tmp_path)
    assert info.value.key == "available[0].parallel"


@pytest.mark.parametrize("bad", [0, 65, True, 2.0, "four", ""])
def test_bad_parallel_values_are_refused(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        InferenceConfig(parallel=bad)  # type: ignore[arg-type]
    assert info.value.key == "inference.parallel"
    with pytest.raises(ValueError, match="parallel"):
        ModelSpec(id="a", path=tmp_path / "a.gguf", parallel=bad)  # type: ignore[arg-type]
