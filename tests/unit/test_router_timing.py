"""The router's time-based behaviour on a virtual clock (pytest-trio's autojump_clock).

Breaker cooldown and trial timeout, retry backoff with jitter inside the deadline, and
mid-stream resume, driven through the real Router. Only the transport is scripted: each
peer's InferClient answer is a list of steps (wait, tokens, done, or an error).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import trio

from peerllm.config import NodeConfig
from peerllm.errors import InferenceRejected, PeerConnectionLost, PeerTimeout
from peerllm.inference.request import Done, GenerationRequest, SamplingParams, TokenChunk
from peerllm.p2p.registry import PeerRegistry, Source
from peerllm.router import NoRoute, Router
from peerllm.scheduling.timeouts import (
    MODEL_LOAD_ALLOWANCE_S,
    STALL_FLOOR_S,
    first_token_limit,
    stall_limit,
)
from peerllm.wire import infer as wi
from peerllm.wire import nodeinfo as w

MODEL = "m"
# One step of a scripted answer: seconds to wait, a token, "done", "hang", or an error.
Step = float | str | Exception


def info(peer_id: str, nonce: bytes = b"\x01" * 16) -> w.NodeInfo:
    return w.NodeInfo(
        protocol_version=w.PROTOCOL_VERSION, software_version="0.1.0", peer_id=peer_id,
        node_id="7b0c1d5e-0000-4000-8000-000000000000", name=peer_id, location=None, tags=(),
        boot_nonce=nonce, started_at=1000.0, issued_at=1000.0, seq=1, addrs=(),
        capabilities=w.Capabilities(protocols=(w.PROTOCOL_ID, wi.PROTOCOL_ID), features=(),
                                    private_network=False),
        resources=w.Resources(cpu_cores=2, ram_total_bytes=16 << 30, ram_free_bytes=8 << 30,
                              gpus=()),
        models=(w.ModelInfo(id=MODEL, loaded=True, context_size=None, size_bytes=1 << 30,
                            tags=()),),
        load=w.Load(active=0, queued=0, capacity=2),
        performance=w.Performance(tokens_per_second=50.0, ttft_ms=None))


@dataclass
class Remote:
    steps: list[Step]
    request_id: int
    accepted: wi.Accepted

    async def events(self) -> AsyncGenerator[wi.Tokens | wi.Done, None]:
        n = 0
        for step in self.steps:
            if isinstance(step, float | int):
                await trio.sleep(step)
            elif isinstance(step, Exception):
                raise step
            elif step == "hang":
                await trio.sleep_forever()
            elif step == "done":
                yield wi.Done(request_id=self.request_id, finish_reason="length", prompt_tokens=1,
                              completion_tokens=n, ttft_ms=None, total_ms=1.0)
                return
            else:
                n += 1
                yield wi.Tokens(request_id=self.request_id, text=step, n_tokens=1)


@dataclass
class ScriptedClient:
    """Stands in for InferClient: what each peer answers, in order of the requests."""

    scripts: dict[str, list[list[Step]]]
    load: wi.Load | None = None  # what every `accepted` reports
    calls: list[tuple[str, float, str]] = field(default_factory=list)  # peer, time, resume

    def next_request_id(self) -> int:
        return len(self.calls) + 1

    @asynccontextmanager
    async def request(self, peer_id: str, req: wi.InferRequest) -> AsyncIterator[Remote]:
        self.calls.append((peer_id, trio.current_time(), req.resume_text))
        script = self.scripts[peer_id]
        steps = script.pop(0) if len(script) > 1 else script[0]
        # Errors before the first token surface from here, as InferClient's do.
        while steps and isinstance(steps[0], float | int | Exception):
            head = steps[0]
            if isinstance(head, Exception):
                raise head
            await trio.sleep(head)
            steps = steps[1:]
        yield Remote(list(steps), req.request_id, wi.Accepted(
            request_id=req.request_id, served_by=peer_id, model=req.model, load=self.load))


class FakeHost:
    def __init__(self) -> None:
        self.down: set[str] = set()

    def is_connected(self, peer_id: str) -> bool:
        return peer_id not in self.down


class FakeNode:
    """The parts of Node the router reads: config, registry, host; no engine."""

    def __init__(self, peers: list[str]) -> None:
        self.config = NodeConfig()
        self.peer_id = "self"
        self.name = "self"
        self.engine = None
        self.host = FakeHost()
        self.registry = PeerRegistry("self", stale_after_s=1e9, max_peers=64)
        self.suspected: list[str] = []
        for p in peers:
            self.restart(p, b"\x01" * 16)

    def restart(self, peer_id: str, nonce: bytes) -> None:
        import time
        self.registry.saw(peer_id, Source.BOOTSTRAP, now=time.time())
        self.registry.info_received(peer_id, info(peer_id, nonce), rtt_ms=1.0, now=time.time(),
                                    compatible_version=w.PROTOCOL_VERSION)

    def model_ids(self) -> list[str]:
        return []

    def suspect_peer(self, peer_id: str) -> None:
        self.suspected.append(peer_id)

    def after_remote_request(self, peer_id: str) -> None:
        pass

    async def find_providers(self, model: str) -> list[tuple[str, list[str]]]:
        return []


def make_router(scripts: dict[str, list[list[Step]]], *, seed: int = 1
                ) -> tuple[Router, FakeNode, ScriptedClient]:
    node = FakeNode(list(scripts))
    router = Router(cast(Any, node), rng=random.Random(seed))
    client = ScriptedClient(scripts)
    router._client = cast(Any, client)
    return router, node, client


REQ = GenerationRequest(model=MODEL, prompt="hi", params=SamplingParams(max_tokens=8))


async def run(router: Router, *, deadline_s: float = 300.0) -> tuple[str, Done]:
    text = ""
    async with router.open(REQ, deadline_s=deadline_s) as routed:
        async for ev in routed.events():
            if isinstance(ev, TokenChunk):
                text += ev.text
            else:
                return text, ev
    raise AssertionError("no Done")


def timeout(peer: str) -> PeerTimeout:
    return PeerTimeout(peer, "no answer", phase="call")


def ok() -> list[Step]:
    return [0.1, "a", "b", "done"]


def state(router: Router, peer: str) -> str:
    return router.breaker_state(peer).split(":")[0].split(" ")[0]


async def test_breaker_opens_after_three_failures_and_tries_again_after_the_cooldown(
        autojump_clock: trio.abc.Clock) -> None:
    cfg = NodeConfig().scheduling
    router, _, client = make_router({"a": [[timeout("a")]] * 3 + [ok()]})
    for _ in range(3):
        with pytest.raises(NoRoute):
            await run(router)
    assert state(router, "a") == "open"
    opened = trio.current_time()
    with pytest.raises(NoRoute, match="circuit breaker open"):
        await run(router)
    await trio.sleep_until(opened + cfg.breaker_cooldown_s - 0.5)
    assert state(router, "a") == "open"
    await trio.sleep_until(opened + cfg.breaker_cooldown_s)
    assert state(router, "a") == "half-open"
    assert (await run(router))[0] == "ab"      # the trial
    assert state(router, "a") == "half-open"   # 1 of 2 successes
    assert (await run(router))[0] == "ab"
    assert state(router, "a") == "closed"
    assert len(client.calls) == 5


async def test_an_unanswered_trial_reopens_the_breaker_after_the_trial_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    cfg = NodeConfig().scheduling
    router, _, _ = make_router({"a": [[timeout("a")]] * 3 + [[600.0, "x", "done"]]})
    for _ in range(3):
        with pytest.raises(NoRoute):
            await run(router)
    await trio.sleep(cfg.breaker_cooldown_s)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, router)
        await trio.sleep(1.0)
        # The trial (not yet accepted) holds the only slot: nobody else may use "a".
        assert "a" in router.candidates(MODEL)[1]
        await trio.sleep(cfg.breaker_trial_timeout_s - 1.0)
        assert state(router, "a") == "open"
        nursery.cancel_scope.cancel()


async def test_a_long_trial_that_streams_is_not_an_unanswered_one(
        autojump_clock: trio.abc.Clock) -> None:
    cfg = NodeConfig().scheduling
    slow = [0.1, "a", 12.0, "b", "done"]  # first token at once, then longer than the trial timeout
    router, _, _ = make_router({"a": [[timeout("a")]] * 3 + [slow]})
    for _ in range(3):
        with pytest.raises(NoRoute):
            await run(router)
    await trio.sleep(cfg.breaker_cooldown_s)
    assert (await run(router))[0] == "ab"
    assert state(router, "a") == "half-open"  # one success counted, not reopened


async def test_retries_back_off_exponentially_with_jitter(
        autojump_clock: trio.abc.Clock) -> None:
    peers = [f"p{i}" for i in range(5)]
    router, _, client = make_router({p: [[timeout(p)]] for p in peers})
    with pytest.raises(NoRoute) as err:
        await run(router)
    assert sorted(err.value.reasons) == peers and all(
        "no answer" in r for r in err.value.reasons.values())
    times = [t for _, t, _ in client.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for k, gap in enumerate(gaps):
        base = min(0.05 * 2**k, 1.0)
        assert 0.5 * base <= gap <= 1.5 * base, (k, gap)
    assert gaps[-1] > gaps[0]


async def test_failover_stays_inside_the_request_deadline(
        autojump_clock: trio.abc.Clock) -> None:
    peers = ["p0", "p1", "p2", "p3"]
    router, _, client = make_router({p: [[2.0, timeout(p)]] for p in peers})
    start = trio.current_time()
    with pytest.raises(NoRoute) as err:
        await run(router, deadline_s=5.0)
    assert len(client.calls) == 3        # the 4th would start after the deadline
    assert trio.current_time() - start < 7.0
    assert sum("deadline passed" in r for r in err.value.reasons.values()) == 1


async def test_a_dead_peer_trips_its_breaker_at_once_and_a_restart_reopens_it(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, _ = make_router({"a": [[PeerConnectionLost("a", "reset")], ok()],
                                   "b": [ok()]})
    router._rng = random.Random(0)
    node.host.down.add("a")
    router.breakers.clear()
    # Make "a" the first choice, then kill it before its first token.
    router.weights = type(router.weights)(free_memory=0, load=0, latency=1, throughput=0)
    node.registry.get("b").rtt_ms = 500.0  # type: ignore[union-attr]
    text, _ = await run(router)
    assert text == "ab"
    assert state(router, "a") == "open"       # one failure was enough: its connection is gone
    assert node.suspected == ["a"]
    node.host.down.clear()
    node.restart("a", b"\x02" * 16)          # a new process behind the same peer ID
    assert state(router, "a") == "half-open"
    cands, _ = router.candidates(MODEL)
    assert {c.peer_id: c.half_open for c in cands} == {"a": True, "b": False}


async def test_a_stream_that_breaks_mid_way_resumes_elsewhere_without_a_backoff(
        autojump_clock: trio.abc.Clock) -> None:
    broken: list[Step] = [0.1, "x", "y", 0.5, PeerConnectionLost("a", "reset")]
    router, node, client = make_router({"a": [broken], "b": [[0.2, "z", "done"]]})
    router.weights = type(router.weights)(free_memory=0, load=0, latency=1, throughput=0)
    node.registry.get("b").rtt_ms = 500.0  # type: ignore[union-attr]
    node.host.down.add("a")
    text, done = await run(router)
    assert text == "xyz" and done.completion_tokens == 3
    (pa, ta, ra), (pb, tb, rb) = client.calls
    assert (pa, pb, ra, rb) == ("a", "b", "", "xy")
    assert tb - ta == pytest.approx(0.6)      # resumed the instant the break was seen


async def test_a_non_retryable_refusal_is_not_retried(autojump_clock: trio.abc.Clock) -> None:
    bad = InferenceRejected("bad_request", "prompt too long", retryable=False)
    router, _, client = make_router({"a": [[bad]], "b": [[bad]]})
    with pytest.raises(InferenceRejected, match="prompt too long"):
        await run(router)
    assert len(client.calls) == 1
    assert state(router, "a") == "closed" and state(router, "b") == "closed"


async def test_the_load_in_accepted_is_used_until_newer_node_info_arrives(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, client = make_router({"a": [ok()]})
    client.load = wi.Load(active=2, queued=5, capacity=2)
    await run(router)
    (c,), _ = router.candidates(MODEL)
    assert (c.active, c.queued, c.capacity, c.degraded) == (2, 5, 2, True)
    assert router.explain(MODEL)["candidates"][0]["load"]["from"] == "accepted"  # type: ignore[index]
    node.restart("a", b"\x01" * 16)  # a node-info refresh after the request
    (c,), _ = router.candidates(MODEL)
    assert (c.active, c.queued) == (0, 0) and "a" not in router.load_hints


@pytest.mark.parametrize(("per_token_s", "expected_wait_s"), [
    (0.05, STALL_FLOOR_S),       # a fast stream: silent for 2 s is frozen
    (0.2, 20 * 0.2),             # 20x its usual gap
    (1.0, NodeConfig().scheduling.stall_timeout_s),  # capped by stall_timeout_s
])
async def test_a_frozen_peer_mid_stream_is_resumed_elsewhere_after_a_stall(
        autojump_clock: trio.abc.Clock, per_token_s: float, expected_wait_s: float) -> None:
    tokens: list[Step] = [0.1, "x"]
    for t in "ybcd":
        tokens += [per_token_s, t]
    router, node, client = make_router({"a": [[*tokens, "hang"]],
                                        "b": [[0.2, "z", "done"]]})
    node.registry.get("b").rtt_ms = 500.0  # type: ignore[union-attr]
    text, done = await run(router)
    assert text == "xybcdz" and done.completion_tokens == 6
    (_, ta, _), (pb, tb, rb) = client.calls
    assert (pb, rb) == ("b", "xybcd")
    assert tb - ta == pytest.approx(0.1 + 4 * per_token_s + expected_wait_s)
    assert "closed (1 recent" in router.breaker_state("a")  # a failure, not proof of death


def test_stall_limit() -> None:
    assert stall_limit(None, 15.0) == 15.0
    assert stall_limit(0.001, 15.0) == STALL_FLOOR_S
    assert stall_limit(0.5, 15.0) == 10.0
    assert stall_limit(5.0, 15.0) == 15.0


async def test_a_peer_that_accepts_but_never_answers_fails_over_after_the_first_token_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    first = NodeConfig().scheduling.first_token_timeout_s
    router, node, client = make_router({"a": [["hang"]], "b": [ok()]})
    node.registry.get("b").rtt_ms = 500.0  # type: ignore[union-attr]
    start = trio.current_time()
    text, _ = await run(router)
    assert text == "ab" and [p for p, _, _ in client.calls] == ["a", "b"]
    assert first <= trio.current_time() - start <= first + 1.0


async def test_state_of_peers_the_registry_dropped_is_forgotten(
        autojump_clock: trio.abc.Clock) -> None:
    import time
    router, node, _ = make_router({"a": [[timeout("a")]], "b": [ok()]})
    router.peer_down("a")
    assert state(router, "a") == "open"
    node.registry.failed("a", "gone", now=time.time(), refused=True)
    node.registry.max_peers = 2
    node.registry.saw("c", Source.MDNS, now=time.time())  # full: the dead "a" is evicted
    assert node.registry.get("a") is None
    router.candidates(MODEL)
    assert "a" not in router.breakers and state(router, "a") == "closed"


async def test_a_peer_that_always_breaks_after_its_first_token_opens_its_breaker(
        autojump_clock: trio.abc.Clock) -> None:
    flaky: list[Step] = [0.1, "x", 0.05, "y", 10.0, timeout("a")]
    router, node, _ = make_router({"a": [flaky], "b": [[0.1, "z", "done"]]})
    node.registry.get("b").rtt_ms = 500.0  # type: ignore[union-attr]
    for _ in range(3):
        # "a" ranks first while its breaker is closed; each answer is still whole.
        assert (await run(router))[0].endswith("z")
    assert state(router, "a") == "open"


async def test_a_trial_is_released_when_the_caller_goes_away_or_the_peer_refuses(
        autojump_clock: trio.abc.Clock) -> None:
    cfg = NodeConfig().scheduling
    bad = InferenceRejected("bad_request", "prompt too long", retryable=False)
    router, _, _ = make_router({"a": [[timeout("a")]] * 3 + [[5.0, "x", "done"], [bad], ok()]})
    for _ in range(3):
        with pytest.raises(NoRoute):
            await run(router)
    await trio.sleep(cfg.breaker_cooldown_s)
    with trio.move_on_after(1.0):  # the caller gives up before "a" accepts
        await run(router)
    assert router.breakers["a"].trials == () and state(router, "a") == "half-open"
    with pytest.raises(InferenceRejected):  # "a" answered: a refusal, not a dead trial
        await run(router)
    assert router.breakers["a"].trials == () and state(router, "a") == "half-open"
    await trio.sleep(cfg.breaker_trial_timeout_s + 1)
    assert state(router, "a") == "half-open"  # nothing left to time out


async def test_a_reconnect_of_the_same_process_waits_out_the_cooldown(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, _ = make_router({"a": [ok()]})
    router.peer_down("a")
    node.restart("a", b"\x01" * 16)  # node-info again, same boot nonce: same process
    assert state(router, "a") == "open"
    await trio.sleep(NodeConfig().scheduling.breaker_cooldown_s)
    assert state(router, "a") == "half-open"


def test_first_token_limit_allows_for_the_queue_and_a_model_load() -> None:
    assert first_token_limit(60.0, 0, loaded=True) == 60.0
    assert first_token_limit(60.0, 2, loaded=True) == 180.0
    assert first_token_limit(60.0, 2, loaded=False) == 180.0 + MODEL_LOAD_ALLOWANCE_S
