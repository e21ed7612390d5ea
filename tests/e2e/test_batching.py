"""Continuous batching on the real bundled model (Gemma 3 270M Q4_K_M): several requests
share one llama context and one llama_decode per step, and each still gets exactly what
it would get alone.

The reference is the single-stream LlamaInstance on its own context. Both contexts are
opened once per module (2 threads); generation is kept to <= 16 tokens. Requests run in
plain threads, as the engine's worker threads would call ``generate``; the last test goes
through the registry and engine with ``parallel`` set.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from peerllm.config import InferenceConfig
from peerllm.errors import InvalidInferenceRequest
from peerllm.inference import sampler
from peerllm.inference.backend import GenerationOutcome, ModelInstance, OpenOptions
from peerllm.inference.batched_llama import BatchedLlamaInstance
from peerllm.inference.catalog import assemble_bundled
from peerllm.inference.engine import Engine, GenerationRequest
from peerllm.inference.llama import LlamaBackend, LlamaInstance
from peerllm.inference.registry import open_registry
from peerllm.inference.request import ChatMessage, SamplingParams
from peerllm.inference.specs import ModelSpec
from tests.e2e.recording import RecordingBackend

PARALLEL = 4
GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
PROMPTS = ("The capital of France is", "Once upon a time", "def fibonacci(n):",
           "The three primary colours are")


def options(parallel: int) -> OpenOptions:
    return OpenOptions(model_id="gemma", context_size=1024, n_threads=2, chat_format="gemma",
                       parallel=parallel)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return assemble_bundled()


@pytest.fixture(scope="module")
def single(model_path: Path) -> Iterator[ModelInstance]:
    instance = LlamaBackend().open(model_path, options(1), should_stop=lambda: False)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def batched(model_path: Path) -> Iterator[BatchedLlamaInstance]:
    instance = LlamaBackend().open(model_path, options(PARALLEL), should_stop=lambda: False)
    assert isinstance(instance, BatchedLlamaInstance)
    yield instance
    instance.close()


@dataclass
class Job:
    """One request: a prompt or chat, its parameters, and what came back."""

    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    params: SamplingParams = GREEDY
    stop_after_pieces: int | None = None  # should_stop turns True after this many emits
    resume_text: str = ""  # a partial answer to continue (failover resume)
    pieces: list[str] = field(default_factory=list)
    outcome: GenerationOutcome | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def run(self, instance: ModelInstance, *, start: threading.Barrier | None = None) -> None:
        encoded = instance.encode(messages=self.messages, prompt=self.prompt,
                                  resume_text=self.resume_text)
        if start is not None:
            start.wait()
        self.outcome = instance.generate(encoded, self.params, emit=self._emit,
                                         should_stop=self._should_stop)

    def _emit(self, text: str, _n_tokens: int) -> None:
        self.pieces.append(text)

    def _should_stop(self) -> bool:
        return self.stop_after_pieces is not None and len(self.pieces) >= self.stop_after_pieces


def run_together(instance: ModelInstance, jobs: Sequence[Job]) -> None:
    """Run every job in its own thread, all released at once; re-raise the first error."""
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def target(job: Job) -> Callable[[], None]:
        def run() -> None:
            try:
                job.run(instance, start=start)
            except BaseException as exc:  # reported by the test thread below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=target(job)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def alone(single: ModelInstance, job: Job) -> Job:
    """``job`` on the single-stream context from a clean cache. (llama_cpp's Llama reuses
    the prefix of its previous prompt, at least the BOS token, whose KV was computed in
    another batch shape: enough to flip a greedy pick now and then.)"""
    assert isinstance(single, LlamaInstance)
    single._llm.reset()
    reference = Job(prompt=job.prompt, messages=job.messages, params=job.params,
                    resume_text=job.resume_text)
    reference.run(single)
    return reference


def test_concurrent_greedy_requests_are_batched_and_match_single_stream(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    before = batched.statistics()
    jobs = [Job(prompt=p) for p in PROMPTS]
    run_together(batched, jobs)
    after = batched.statistics()
    for job in jobs:
        reference = alone(single, job)
        assert job.text == reference.text and job.text.strip()
        assert job.outcome is not None and reference.outcome is not None
        assert (job.outcome.finish_reason, job.outcome.completion_tokens) == \
            (reference.outcome.finish_reason, reference.outcome.completion_tokens)
    widths = {w: after.steps_by_width.get(w, 0) - before.steps_by_width.get(w, 0)
              for w in after.steps_by_width}
    steps = after.decode_calls - before.decode_calls
    # One llama_decode per step for every active sequence: 4 x 16 tokens take far fewer
    # decode calls than 4 x (16 + prefill) would alone, and most steps hold several.
    assert sum(widths.values()) == steps
    assert max(w for w, n in widths.items() if n) > 1
    assert steps < sum(job.outcome.completion_tokens for job in jobs if job.outcome)
    assert (after.running, after.queued, after.slots) == (0, 0, PARALLEL)


def test_more_requests_than_slots_wait_their_turn(single: ModelInstance,
                                                  batched: BatchedLlamaInstance) -> None:
    params = SamplingParams(max_tokens=6, temperature=0.0)
    jobs = [Job(prompt=p, params=params) for p in (*PROMPTS, *PROMPTS[:2])]
    run_together(batched, jobs)
    for job in jobs:
        assert job.text == alone(single, job).text


def test_cancelling_one_request_leaves_the_others_intact(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    jobs = [Job(prompt=PROMPTS[0]), Job(prompt=PROMPTS[1], stop_after_pieces=2),
            Job(prompt=PROMPTS[2])]
    run_together(batched, jobs)
    cancelled = jobs[1].outcome
    assert cancelled is not None and cancelled.finish_reason == "cancelled"
    assert cancelled.completion_tokens < GREEDY.max_tokens
    assert alone(single, jobs[1]).text.startswith(jobs[1].text)
    for job in (jobs[0], jobs[2]):
        assert job.text == alone(single, job).text
        assert job.outcome is not None and job.outcome.finish_reason == "length"
    assert batched.running == 0


def test_stop_strings_and_max_tokens_are_per_request(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    full = alone(single, Job(prompt=PROMPTS[0])).text
    stop = full.split()[2]
    jobs = [Job(prompt=PROMPTS[0], params=SamplingParams(max_tokens=16, temperature=0.0,
                                                         stop=(stop,))),
            Job(prompt=PROMPTS[0], params=SamplingParams(max_tokens=3, temperature=0.0)),
            Job(prompt=PROMPTS[0])]
    run_together(batched, jobs)
    stopped, short, plain = jobs
    assert stopped.text == full[: full.index(stop)]
    assert stopped.outcome is not None and stopped.outcome.finish_reason == "stop"
    assert short.outcome is not None and \
        (short.outcome.finish_reason, short.outcome.completion_tokens) == ("length", 3)
    assert short.text == alone(single, short).text and full.startswith(short.text)
    assert plain.text == full


def test_a_second_chat_turn_reuses_the_first_turns_prefix(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    question = ChatMessage(role="user", content="Name a colour.")
    first = Job(messages=(question,))
    first.run(batched)
    turn2 = (question, ChatMessage(role="assistant", content=first.text),
             ChatMessage(role="user", content="And another one?"))
    prompt_tokens = len(batched.encode(messages=turn2, prompt=None, resume_text="").tokens)
    before = batched.statistics()
    second = Job(messages=turn2)
    second.run(batched)
    after = batched.statistics()
    prefilled = after.prefilled_tokens - before.prefilled_tokens
    reused = after.reused_tokens - before.reused_tokens
    first_prompt = len(batched.encode(messages=(question,), prompt=None, resume_text="").tokens)
    assert reused >= first_prompt and prefilled + reused == prompt_tokens
    assert prefilled < prompt_tokens
    assert second.text == alone(single, second).text


def test_a_finished_sequence_names_its_slot_and_epoch_until_the_slot_is_reused(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    first = Job(prompt="Slot epochs, first request:")
    first.run(batched)
    assert first.outcome is not None and first.outcome.slot is not None
    slot, epoch = first.outcome.slot, first.outcome.slot_epoch
    assert batched.slot_epochs()[slot] == epoch  # its KV is still in the slot
    # Occupy every slot at once: one of them must be ``slot``, given to a new sequence.
    run_together(batched, [Job(prompt=f"Filler {i} for every slot")
                           for i in range(batched.slots)])
    assert batched.slot_epochs()[slot] != epoch
    lone = alone(single, Job(prompt="Not batched"))
    assert lone.outcome is not None
    assert (lone.outcome.slot, lone.outcome.slot_epoch) == (None, None)


@pytest.mark.parametrize("params", [
    GREEDY,
    SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.6),
    SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0,
                   logit_bias=((236761, 8.0), (108, -50.0))),
    SamplingParams(max_tokens=16, temperature=0.9, seed=11, repeat_penalty=1.4,
                   logit_bias=((236761, 3.0),)),
], ids=["default", "repeat-penalty", "logit-bias", "sampled"])
def test_the_greedy_fast_path_picks_what_llama_cpps_sampler_chain_picks(
        single: ModelInstance, batched: BatchedLlamaInstance, params: SamplingParams,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [Job(prompt=p, params=params) for p in PROMPTS]
    run_together(batched, fast)
    monkeypatch.setattr(sampler, "greedy_applies", lambda _params, _gbnf: False)
    monkeypatch.setattr(sampler, "adjusts_in_place", lambda _params: False)  # all in C
    chain = [Job(prompt=p, params=params) for p in PROMPTS]
    run_together(batched, chain)
    assert [j.text for j in fast] == [j.text for j in chain]
    assert fast[0].text == alone(single, fast[0]).text  # and what the single path gives
    if params.logit_bias and params.temperature == 0.0:  # it steers the text (+8 on ".")
        unbiased = Job(prompt=PROMPTS[0], params=dataclasses.replace(params, logit_bias=()))
        assert alone(single, unbiased).text != fast[0].text


def test_resume_text_penalties_and_a_too_long_prompt_behave_as_on_the_single_path(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    jobs = [Job(prompt=PROMPTS[0], resume_text=" Paris, a city"),
            Job(prompt=PROMPTS[2], params=SamplingParams(
                max_tokens=16, temperature=0.0, presence_penalty=0.5, frequency_penalty=0.3)),
            Job(prompt=PROMPTS[3], params=SamplingParams(max_tokens=3, temperature=0.0))]
    run_together(batched, jobs)
    for job in jobs:
        assert job.text == alone(single, job).text
    assert jobs[2].outcome is not None and jobs[2].outcome.finish_reason == "length"
    too_long = "word " * 1200  # past one slot's window (the context size)
    for instance in (single, batched):
        with pytest.raises(InvalidInferenceRequest, match="context window"):
            instance.encode(messages=None, prompt=too_long, resume_text="")


def test_seeded_sampling_is_reproducible_per_request(
        single: ModelInstance, batched: BatchedLlamaInstance) -> None:
    def seeded(seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=16, temperature=1.0, seed=seed)

    jobs = [Job(prompt=PROMPTS[1], params=seeded(7)), Job(prompt=PROMPTS[1], params=seeded(7)),
            Job(prompt=PROMPTS[1], params=seeded(8))]
    run_together(batched, jobs)
    assert jobs[0].text == jobs[1].text == alone(single, jobs[0]).text
    assert jobs[2].text == alone(single, jobs[2]).text


def test_a_json_schema_constrains_one_request_only(batched: BatchedLlamaInstance) -> None:
    schema = '{"type": "object", "properties": {"ok": {"type": "boolean"}}, ' \
             '"required": ["ok"]}'
    jobs = [Job(prompt="Reply in JSON: ", params=SamplingParams(
                max_tokens=16, temperature=0.0, json_schema=schema)),
            Job(prompt=PROMPTS[0])]
    run_together(batched, jobs)
    assert jobs[0].text.lstrip().startswith("{")
    assert not jobs[1].text.lstrip().startswith("{")


def test_a_logit_bias_outside_the_vocabulary_is_refused(
        batched: BatchedLlamaInstance) -> None:
    job = Job(prompt=PROMPTS[0], params=SamplingParams(max_tokens=4, temperature=0.0,
                                                       logit_bias=((10**6, 1.0),)))
    with pytest.raises(InvalidInferenceRequest):
        job.run(batched)
    assert batched.running == 0 and batched.queued == 0


async def test_the_engine_batches_concurrent_requests_of_a_parallel_model(
        model_path: Path, single: ModelInstance) -> None:
    backend = RecordingBackend()
    config = InferenceConfig(n_threads=2, warmup_tokens=4, max_queue=0, parallel=PARALLEL)
    spec = ModelSpec(id="gemma", path=model_path, chat_format="gemma", context_size=1024)
    texts: dict[str, str] = {}
    async with open_registry([spec], config=config, backend=backend) as registry:
        engine = Engine(registry)
        await registry.load("gemma")

        async def ask(prompt: str) -> None:
            text, _ = await engine.complete(GenerationRequest(model="gemma", prompt=prompt,
                                                              params=GREEDY))
            texts[prompt] = text

        async with trio.open_nursery() as nursery:
            for prompt in PROMPTS:
                nursery.start_soon(ask, prompt)
        (instance,) = backend.opened
        assert isinstance(instance, BatchedLlamaInstance)
        stats = instance.statistics()
        assert max(stats.steps_by_width) > 1
        assert registry.concurrency("gemma") == PARALLEL
        assert registry.status("gemma").requests == len(PROMPTS)
    for prompt in PROMPTS:
        assert texts[prompt] == alone(single, Job(prompt=prompt)).text


def test_a_prefix_cached_away_from_the_running_slots_is_copied_next_to_them(
        model_path: Path, single: ModelInstance) -> None:
    instance = LlamaBackend().open(model_path, options(3), should_stop=lambda: False)
    assert isinstance(instance, BatchedLlamaInstance)
    try:
        question = ChatMessage(role="user", content="Tell me a story about a brave knight.")
        first = Job(messages=(question,))
        first.run(instance)  # nothing cached anywhere: slot 0
        Job(prompt=PROMPTS[1]).run(instance)  # the least recently used: slot 1
        turn2 = (question, ChatMessage(role="assistant", content=first.text),
                 ChatMessage(role="user", content="What was his name?"))
        second = Job(messages=turn2)
        started = threading.Event()
        later: list[threading.Thread] = []

        class Long(Job):
            def _emit(self, text: str, n_tokens: int) -> None:
                super()._emit(text, n_tokens)
                if not started.is_set():  # slot 2 runs: join the turn while it does
                    started.set()
                    later.append(threading.Thread(target=second.run, args=(instance,)))
                    later[0].start()

        long = Long(prompt=PROMPTS[2])
        before = instance.statistics()
        long.run(instance)  # slot 2 (never used); the turn goes next to it, to slot 1
        later[0].join()
        after = instance.statistics()
        assert after.cache_copies - before.cache_copies == 1
        assert after.reused_tokens - before.reused_tokens >= len(
            instance.encode(messages=(question,), prompt=None, resume_text="").tokens)
        assert second.text == alone(single, second).text
        assert long.text == alone(single, Job(prompt=PROMPTS[2])).text
    finally:
        instance.close()
