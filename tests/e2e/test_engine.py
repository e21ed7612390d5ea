"""The engine on the real bundled model (Gemma 3 270M Q4_K_M) through llama-cpp-python.

Every test builds its own registry (trio objects live in one trio.run), but the llama
contexts are opened once per module by a caching backend, so the suite pays for one
model load, not one per test. Generation is kept to <= 16 tokens, 2 threads.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from peerllm.config import InferenceConfig
from peerllm.errors import InferenceTimeout, ModelBusy, ModelLoadError
from peerllm.events import Done, TokenChunk
from peerllm.inference.backend import (
    Benchmark,
    Embedded,
    Emit,
    EncodedPrompt,
    GenerationOutcome,
    OpenOptions,
    StopCheck,
)
from peerllm.inference.catalog import assemble_bundled
from peerllm.inference.engine import ChatMessage, Engine, GenerationRequest, SamplingParams
from peerllm.inference.llama import LlamaBackend, LlamaInstance
from peerllm.inference.registry import ModelRegistry, open_registry
from peerllm.inference.specs import ModelSpec, bundled_spec

MODEL = "gemma"
# parallel 1: these tests are of the single-stream path and its one-at-a-time queue
# (test_batching.py covers the batched one).
CONFIG = InferenceConfig(n_threads=2, warmup_tokens=4, max_queue=1, parallel=1)
GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
PROMPT = "The capital of France is"


class SharedInstance:
    """A module-wide llama context whose ``close`` only counts (the module closes it)."""

    def __init__(self, inner: LlamaInstance, backend: SharedBackend) -> None:
        self.inner = inner
        self._backend = backend

    @property
    def context_size(self) -> int:
        return self.inner.context_size

    def encode(self, *, messages: Sequence[ChatMessage] | None, prompt: str | None,
               resume_text: str) -> EncodedPrompt:
        return self.inner.encode(messages=messages, prompt=prompt, resume_text=resume_text)

    def generate(self, prompt: EncodedPrompt, params: SamplingParams, *, emit: Emit,
                 should_stop: StopCheck) -> GenerationOutcome:
        return self.inner.generate(prompt, params, emit=emit, should_stop=should_stop)

    def embed(self, inputs: Sequence[str]) -> Embedded:
        return self.inner.embed(inputs)

    def benchmark(self, n_tokens: int) -> Benchmark:
        return self.inner.benchmark(n_tokens)

    def close(self) -> None:
        self._backend.closes += 1


class SharedBackend:
    max_parallel = 1  # one shared single-stream context per options

    def __init__(self) -> None:
        self._real = LlamaBackend()
        self._open: dict[tuple[Path, OpenOptions], LlamaInstance] = {}
        self.closes = 0

    def open(self, path: Path, options: OpenOptions, *,
             should_stop: StopCheck) -> SharedInstance:
        key = (path, options)
        if key not in self._open:
            self._open[key] = self._real.open(path, options, should_stop=should_stop)
        return SharedInstance(self._open[key], self)

    def instance(self, *, embedding: bool = False) -> LlamaInstance:
        return next(i for (_, o), i in self._open.items() if o.embedding == embedding)

    def close_all(self) -> None:
        for instance in self._open.values():
            instance.close()


@pytest.fixture(scope="module")
def model_path() -> Path:
    return assemble_bundled()


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedBackend]:
    backend = SharedBackend()
    yield backend
    backend.close_all()


def gemma(path: Path) -> ModelSpec:
    return ModelSpec(id=MODEL, path=path, chat_format="gemma", context_size=1024)


@asynccontextmanager
async def engine_for(specs: list[ModelSpec], backend: Any,
                     config: InferenceConfig = CONFIG) -> AsyncIterator[tuple[Engine,
                                                                               ModelRegistry]]:
    async with open_registry(specs, config=config, backend=backend) as registry:
        yield Engine(registry), registry


@pytest.fixture
async def served(model_path: Path, shared: SharedBackend
                 ) -> AsyncIterator[tuple[Engine, ModelRegistry]]:
    async with engine_for([gemma(model_path)], shared) as (engine, registry):
        await registry.load(MODEL)
        yield engine, registry


def tokens(shared: SharedBackend, text: str) -> int:
    llm = shared.instance()._llm
    return len(llm.tokenize(text.encode(), add_bos=True, special=True))


async def test_greedy_generation_is_deterministic_and_counted(
        served: tuple[Engine, ModelRegistry], shared: SharedBackend) -> None:
    engine, registry = served
    request = GenerationRequest(model=MODEL, prompt=PROMPT, params=GREEDY)
    chunks: list[TokenChunk] = []
    async with engine.stream(request) as stream:
        async for item in stream:
            if isinstance(item, TokenChunk):
                assert item.text and item.n_tokens >= 1
                chunks.append(item)
            else:
                done = item
    text = "".join(c.text for c in chunks)
    assert text.strip()
    assert (done.finish_reason, done.completion_tokens) == ("length", 8)
    assert sum(c.n_tokens for c in chunks) == 8
    assert done.prompt_tokens == tokens(shared, PROMPT)
    assert done.ttft_ms is not None and 0 < done.ttft_ms <= done.total_ms
    again, done2 = await engine.complete(request)
    assert again == text and done2.completion_tokens == 8
    status = registry.status(MODEL)
    assert status.tokens_generated == 16 and status.requests == 2
    assert status.tokens_per_second is not None and status.tokens_per_second > 0


async def test_the_model_runs_without_extra_buffer_types(shared: SharedBackend,
                                                         served: object) -> None:
    # The AMX repack buffers segfault on some Xeons; the default config turns them off.
    assert shared.instance()._llm._model.params.use_extra_bufts is False


async def test_chat_request(served: tuple[Engine, ModelRegistry], shared: SharedBackend) -> None:
    from llama_cpp import llama_chat_format

    engine, _ = served
    messages = (ChatMessage(role="system", content="Answer briefly."),
                ChatMessage(role="user", content="What is the capital of France?"))
    text, done = await engine.complete(GenerationRequest(model=MODEL, messages=messages,
                                                         params=GREEDY))
    assert done.finish_reason in ("stop", "length") and 1 <= done.completion_tokens <= 8
    assert "<start_of_turn>" not in text and "<end_of_turn>" not in text
    # Gemma has no system role: it is folded into the first user turn.
    prompt = llama_chat_format.format_gemma(messages=[
        {"role": "user", "content": "Answer briefly.\n\nWhat is the capital of France?"}]).prompt
    assert done.prompt_tokens == tokens(shared, prompt)


async def test_stop_strings_are_honoured(served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    full, _ = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT, params=GREEDY))
    words = full.split()
    assert len(words) >= 3
    stop = words[2]
    expected = full[: full.index(stop)]
    params = SamplingParams(max_tokens=8, temperature=0.0, stop=(stop, "never-seen"))
    text, done = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT,
                                                         params=params))
    assert (text, done.finish_reason) == (expected, "stop")
    assert done.completion_tokens < 8


async def test_resume_continues_after_the_given_text(served: tuple[Engine, ModelRegistry],
                                                     shared: SharedBackend) -> None:
    engine, _ = served
    full, _ = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT, params=GREEDY))
    head = full[: len(full) // 2]
    rest, done = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT,
                                                         params=GREEDY, resume_text=head))
    assert rest and not rest.startswith(head)
    assert done.prompt_tokens == tokens(shared, PROMPT)  # the resumed text is not counted


async def test_leaving_mid_stream_frees_the_model(served: tuple[Engine, ModelRegistry]) -> None:
    engine, registry = served
    request = GenerationRequest(model=MODEL, prompt="Once upon a time",
                                params=SamplingParams(max_tokens=16, temperature=0.0))
    start = trio.current_time()
    async with engine.stream(request) as stream:
        first = await stream.__anext__()
        assert isinstance(first, TokenChunk)
    assert trio.current_time() - start < 5.0
    assert (registry.status(MODEL).active, registry.status(MODEL).queued) == (0, 0)
    _, done = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT, params=GREEDY))
    assert done.completion_tokens == 8


async def test_cancel_gives_done_cancelled(served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    request = GenerationRequest(model=MODEL, prompt="Once upon a time",
                                params=SamplingParams(max_tokens=16, temperature=0.0))
    items: list[TokenChunk | Done] = []
    async with engine.stream(request) as stream:
        async for item in stream:
            items.append(item)
            stream.cancel()
    done = items[-1]
    assert isinstance(done, Done) and done.finish_reason == "cancelled"
    assert 1 <= done.completion_tokens < 16


async def test_full_queue_raises_model_busy(served: tuple[Engine, ModelRegistry]) -> None:
    engine, registry = served
    request = GenerationRequest(model=MODEL, prompt=PROMPT, params=GREEDY)
    async with engine.stream(request), engine.stream(request):  # 1 running + 1 queued
        with pytest.raises(ModelBusy) as info:
            async with engine.stream(request):
                pass
        assert info.value.retry_after_s > 0
    assert registry.status(MODEL).queued == 0


async def test_inference_timeout(model_path: Path, shared: SharedBackend) -> None:
    config = InferenceConfig(n_threads=2, warmup_tokens=0, inference_timeout_s=0.05)
    async with engine_for([gemma(model_path)], shared, config) as (engine, registry):
        await registry.load(MODEL)
        with pytest.raises(InferenceTimeout):
            await engine.complete(GenerationRequest(
                model=MODEL, prompt=PROMPT, params=SamplingParams(max_tokens=16)))
        assert registry.status(MODEL).active == 0


async def test_bad_model_files_fail_while_the_bundled_model_serves(
        model_path: Path, shared: SharedBackend, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_text("definitely not a model\n")
    specs = [gemma(model_path), ModelSpec(id="missing", path=tmp_path / "missing.gguf"),
             ModelSpec(id="junk", path=junk)]
    async with engine_for(specs, shared) as (engine, registry):
        with pytest.raises(ModelLoadError, match="no such file"):
            await registry.load("missing")
        with pytest.raises(ModelLoadError, match="not a GGUF file"):
            await engine.complete(GenerationRequest(model="junk", prompt="x", params=GREEDY))
        assert [s.state for s in registry.list()] == ["available", "failed", "failed"]
        _, done = await engine.complete(GenerationRequest(model=MODEL, prompt=PROMPT,
                                                          params=GREEDY))
        assert done.completion_tokens == 8


async def test_embeddings(served: tuple[Engine, ModelRegistry]) -> None:
    engine, _ = served
    got = await engine.embed(MODEL, ["The cat sat on the mat.", "Stock markets fell today."])
    a, b = got.vectors
    assert got.prompt_tokens >= 10  # two sentences of 6 and 5 words, at least a token each
    assert len(a) == len(b) == 640
    assert math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-3)
    assert a != b


async def test_bundled_spec_loads_and_unload_frees_it() -> None:
    # The real backend, not the shared one: unload must really free the context.
    async with engine_for([bundled_spec()], LlamaBackend()) as (engine, registry):
        model = bundled_spec().id
        status = await registry.load(model)
        assert status.state == "loaded" and status.quant == "Q4_K_M"
        assert status.memory_bytes == registry.reserved_bytes > 200 * 1024**2
        _, done = await engine.complete(GenerationRequest(model=model, prompt=PROMPT,
                                                          params=SamplingParams(max_tokens=4)))
        assert done.completion_tokens == 4
        await registry.unload(model)
        assert registry.status(model).state == "available" and registry.reserved_bytes == 0
