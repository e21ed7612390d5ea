"""Concurrent embedding requests share embed calls: queued ones go together in the next
batch, each gets its own vectors and usage back, and one bad input fails only its request."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from peerllm.config import InferenceConfig
from peerllm.errors import InvalidInferenceRequest, ModelLoadError
from peerllm.inference.backend import Embedded
from peerllm.inference.embedding_batch import EmbeddingBatcher, split
from peerllm.inference.engine import Engine
from peerllm.inference.registry import open_registry
from peerllm.inference.specs import ModelSpec
from peerllm.testing import FakeBackend, fake_vector, write_fake_gguf

MB = 1024**2


class Runner:
    """A fake ``run``: one vector [len(text)] and one token per character; each call can
    be held until the test releases it; "bad" inputs are refused, "dead" fail the model."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.hold = trio.Event()
        self.hold.set()

    async def __call__(self, inputs: list[str]) -> Embedded:
        self.calls.append(inputs)
        await self.hold.wait()
        if "dead" in inputs:
            raise ModelLoadError("m", "the model would not load")
        if "bad" in inputs:
            raise InvalidInferenceRequest("m", "input too long")
        return Embedded(vectors=[[float(len(t))] for t in inputs],
                        prompt_tokens=sum(map(len, inputs)),
                        input_tokens=tuple(map(len, inputs)))


async def gather(batcher: EmbeddingBatcher, run: Runner, requests: list[list[str]]
                 ) -> list[Embedded | Exception]:
    out: list[Embedded | Exception] = [ValueError("not run")] * len(requests)

    async def one(i: int) -> None:
        try:
            out[i] = await batcher.embed(requests[i], run)
        except (InvalidInferenceRequest, ModelLoadError) as exc:
            out[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(requests)):
            nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
        run.hold.set()
    return out


async def test_requests_queued_behind_a_batch_go_together_in_the_next() -> None:
    batcher, run = EmbeddingBatcher(), Runner()
    run.hold = trio.Event()  # the first batch runs until every request has queued
    requests = [["a"], ["bb", "ccc"], ["dddd"], ["eeeee", "f"]]
    out = await gather(batcher, run, requests)
    assert run.calls == [["a"], ["bb", "ccc", "dddd", "eeeee", "f"]]
    for inputs, got in zip(requests, out, strict=True):
        assert got == Embedded(vectors=[[float(len(t))] for t in inputs],
                               prompt_tokens=sum(map(len, inputs)),
                               input_tokens=tuple(map(len, inputs)))
    assert batcher.statistics().requests == 4 and batcher.statistics().batches == 2


async def test_a_bad_input_fails_only_its_own_request() -> None:
    batcher, run = EmbeddingBatcher(), Runner()
    run.hold = trio.Event()
    out = await gather(batcher, run, [["first"], ["ok"], ["bad"], ["fine"]])
    assert isinstance(out[2], InvalidInferenceRequest)
    assert [o.vectors for o in (out[0], out[1], out[3]) if isinstance(o, Embedded)] == [
        [[5.0]], [[2.0]], [[4.0]]]


async def test_a_model_failure_is_every_batched_requests() -> None:
    batcher, run = EmbeddingBatcher(), Runner()
    run.hold = trio.Event()
    out = await gather(batcher, run, [["first"], ["dead"], ["ok"]])
    assert isinstance(out[0], Embedded)
    assert all(isinstance(o, ModelLoadError) for o in out[1:])
    assert len(run.calls) == 2  # not retried one by one: the model is the problem


async def test_cancelled_requests_leave_and_a_cancelled_leader_hands_over() -> None:
    batcher, run = EmbeddingBatcher(), Runner()
    run.hold = trio.Event()
    got: dict[str, Embedded] = {}

    async def ask(name: str, scope: trio.CancelScope) -> None:
        with scope:
            got[name] = await batcher.embed([name], run)

    scopes = {name: trio.CancelScope() for name in ("lead", "gone", "next", "last")}
    async with trio.open_nursery() as nursery:
        for name, scope in scopes.items():
            nursery.start_soon(ask, name, scope)
            await trio.testing.wait_all_tasks_blocked()
        scopes["gone"].cancel()  # queued: leaves the queue
        scopes["lead"].cancel()  # its batch is running (held): its result is dropped
        await trio.testing.wait_all_tasks_blocked()
        run.hold.set()
    assert sorted(got) == ["last", "next"]
    assert ["gone"] not in run.calls and run.calls[-1] == ["next", "last"]


def test_split_shares_a_total_by_inputs_when_the_backend_does_not_count_them() -> None:
    whole = Embedded(vectors=[[1.0], [2.0], [3.0]], prompt_tokens=10)
    parts = split(whole, [1, 2])
    assert [p.vectors for p in parts] == [[[1.0]], [[2.0], [3.0]]]
    assert sum(p.prompt_tokens for p in parts) == 10


async def test_the_engine_embeds_concurrent_requests_in_fewer_calls(tmp_path: Path) -> None:
    backend = FakeBackend()
    spec = ModelSpec(id="e", path=write_fake_gguf(tmp_path / "e.gguf", MB), type="embedding",
                     context_size=512)
    config = InferenceConfig(warmup_tokens=0, cache_size_gb=1.0, max_queue=16)
    texts = [f"text number {i}" for i in range(8)]
    got: dict[int, Embedded] = {}
    async with open_registry([spec], config=config, backend=backend,
                             total_ram_bytes=16 * 1024 * MB) as registry:
        engine = Engine(registry)
        await registry.load("e")

        async def one(i: int) -> None:
            got[i] = await engine.embed("e", [texts[i]])

        async with trio.open_nursery() as nursery:
            for i in range(len(texts)):
                nursery.start_soon(one, i)
        stats = engine.embedding_statistics()
    (instance,) = backend.opened
    assert stats.requests == len(texts) and stats.batches == instance.embed_calls
    assert instance.embed_calls < len(texts)
    for i, text in enumerate(texts):
        assert got[i] == Embedded(vectors=[fake_vector(text)], prompt_tokens=4,
                                  input_tokens=(4,))


@pytest.mark.parametrize("sizes", [[], [0, 0]])
def test_split_of_nothing_is_nothing(sizes: list[int]) -> None:
    assert all(p.vectors == [] for p in split(Embedded(vectors=[], prompt_tokens=0), sizes))



async def test_a_request_cancelled_with_its_batch_leader_is_not_queued_again(
        autojump_clock: trio.abc.Clock) -> None:
    batcher = EmbeddingBatcher()
    gates = [trio.Event(), trio.Event(), trio.Event()]
    calls: list[list[str]] = []
    leaders: list[trio.lowlevel.Task] = []
    tasks: dict[trio.lowlevel.Task, trio.CancelScope] = {}

    async def run(inputs: list[str]) -> Embedded:
        calls.append(inputs)
        leaders.append(trio.lowlevel.current_task())
        await gates[min(len(calls) - 1, 2)].wait()
        return Embedded(vectors=[[float(len(t))] for t in inputs],
                        prompt_tokens=sum(map(len, inputs)), input_tokens=tuple(map(len, inputs)))

    async def one(scope: trio.CancelScope, text: str) -> None:
        tasks[trio.lowlevel.current_task()] = scope
        with scope:
            await batcher.embed([text], run)

    scopes = [trio.CancelScope() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, scopes[0], "z")  # leads batch 1, held
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(one, scopes[1], "a")
        nursery.start_soon(one, scopes[2], "bb")
        await trio.testing.wait_all_tasks_blocked()
        gates[0].set()  # batch 2 takes "a" and "bb" together, held
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(calls[1]) == ["a", "bb"]
        # Both give up: first the one taken into the batch, then its leader.
        leader = tasks[leaders[1]]
        (follower,) = (sc for sc in scopes[1:] if sc is not leader)
        follower.cancel()
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel()
    gates[2].set()
    assert (await batcher.embed(["c"], run)).vectors == [[1.0]]
    assert calls[2:] == [["c"]]  # nothing of the abandoned batch is embedded again
