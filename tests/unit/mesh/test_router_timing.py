"""The router's time-based behaviour on a virtual clock (pytest-trio's autojump_clock).

Breaker cooldown and trial timeout, retry backoff with jitter inside the deadline, and
mid-stream resume, driven through the real Router. Only the transport is scripted: each
peer's InferClient answer is a list of steps (wait, tokens, done, or an error).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time

import pytest
import trio

from peerllm.config import NodeConfig
from peerllm.errors import (
    InferenceRejected,
    LocalProtocolError,
    NoRoute,
    PeerConnectionLost,
    PeerUnavailable,
)
from peerllm.events import TokenChunk
from peerllm.inference.request import GenerationRequest, SamplingParams
from peerllm.mesh.explain import explain
from peerllm.mesh.failover import REDISCOVER_WAIT_S
from peerllm.p2p.registry import Source
from peerllm.scheduling.timeouts import (
    MODEL_LOAD_ALLOWANCE_S,
    STALL_FLOOR_S,
    first_token_limit,
    stall_limit,
)
from peerllm.testing import Step
from peerllm.wire import infer as wi

from .fakes import MODEL, make_router, ok, run, state, timeout


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
    # Its stream breaks before it accepts, and the one redial is refused: it is dead.
    router, node, _ = make_router({"a": [[PeerConnectionLost("a", "reset")],
                                         [PeerUnavailable("a", "refused")], ok()],
                                   "b": [ok()]})
    router.rng = random.Random(0)
    node.host.down.add("a")
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
    assert explain(router, MODEL)["candidates"][0]["load"]["from"] == "accepted"  # type: ignore[index]
    node.restart("a", b"\x01" * 16)  # a node-info refresh after the request
    (c,), _ = router.candidates(MODEL)
    assert (c.active, c.queued) == (0, 0) and "a" not in router.loads.hints


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
    assert "closed (1 recent" in router.breakers.describe("a")  # a failure, not proof of death


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
    router.breakers.peer_down("a")
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
    assert router.breakers.get("a").trials == () and state(router, "a") == "half-open"
    with pytest.raises(InferenceRejected):  # "a" answered: a refusal, not a dead trial
        await run(router)
    assert router.breakers.get("a").trials == () and state(router, "a") == "half-open"
    await trio.sleep(cfg.breaker_trial_timeout_s + 1)
    assert state(router, "a") == "half-open"  # nothing left to time out


async def test_a_reconnect_of_the_same_process_waits_out_the_cooldown(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, _ = make_router({"a": [ok()]})
    router.breakers.peer_down("a")
    node.restart("a", b"\x01" * 16)  # node-info again, same boot nonce: same process
    assert state(router, "a") == "open"
    await trio.sleep(NodeConfig().scheduling.breaker_cooldown_s)
    assert state(router, "a") == "half-open"


def test_first_token_limit_allows_for_the_queue_and_a_model_load() -> None:
    assert first_token_limit(60.0, 0, loaded=True) == 60.0
    assert first_token_limit(60.0, 2, loaded=True) == 180.0
    assert first_token_limit(60.0, 2, loaded=False) == 180.0 + MODEL_LOAD_ALLOWANCE_S


async def test_a_busy_peer_is_not_a_broken_peer(autojump_clock: trio.abc.Clock) -> None:
    busy = InferenceRejected("too_many_streams", "at most 8", retryable=True, retry_after_s=0.2)
    router, node, client = make_router({"a": [[busy]] * 6 + [ok()], "b": [ok()]})
    node.registry.get("b").rtt_ms = 500.0  # type: ignore[union-attr]  # "a" ranks first
    for _ in range(6):
        text, _ = await run(router)
        assert text == "ab"
        await trio.sleep(0.3)  # past its Retry-After: "a" is a candidate again
    assert [p for p, _, _ in client.calls].count("a") == 6
    assert state(router, "a") == "closed" and node.suspected == []


async def test_a_busy_peer_is_asked_again_after_its_retry_after(
        autojump_clock: trio.abc.Clock) -> None:
    busy = InferenceRejected("busy", "queue full", retryable=True, retry_after_s=5.0)
    router, _, client = make_router({"a": [[busy], [busy], ok()]})
    start = trio.current_time()
    text, _ = await run(router)  # the only replica: the request waits, it is not lost
    assert text == "ab"
    times = [t - start for _, t, _ in client.calls]
    assert len(times) == 3 and times[1] - times[0] >= 5.0 and times[2] - times[1] >= 5.0
    assert state(router, "a") == "closed"


async def test_busy_waiting_stops_at_the_deadline_with_a_retry_after(
        autojump_clock: trio.abc.Clock) -> None:
    busy = InferenceRejected("busy", "queue full", retryable=True, retry_after_s=5.0)
    router, _, client = make_router({"a": [[busy]]})
    with pytest.raises(NoRoute) as err:
        await run(router, deadline_s=8.0)
    assert err.value.retry_after_s == 5.0 and len(client.calls) == 2
    assert "busy" in err.value.reasons["a"]
    with pytest.raises(NoRoute) as again:  # still inside its Retry-After: not asked at all
        await run(router, deadline_s=1.0)
    assert len(client.calls) == 2 and "busy" in again.value.reasons["a"]


async def test_our_own_encoder_refusing_the_request_does_not_blame_the_peer(
        autojump_clock: trio.abc.Clock) -> None:
    refused = LocalProtocolError("messages: at most 256 turns")
    router, node, _ = make_router({"a": [[refused]] * 5})
    for _ in range(5):
        with pytest.raises(InferenceRejected) as err:
            await run(router)
        assert err.value.code == "bad_request" and not err.value.retryable
        assert "256" in err.value.message
    assert state(router, "a") == "closed" and node.suspected == []


async def test_a_stale_connection_is_redialled_and_the_same_peer_retried(
        autojump_clock: trio.abc.Clock) -> None:
    stale = PeerConnectionLost("a", "write failed: StreamReset")
    router, node, client = make_router({"a": [[stale], ok()]})
    text, _ = await run(router)  # "a" is the only replica: no request is lost
    assert text == "ab"
    assert node.host.disconnected == ["a"] and [p for p, _, _ in client.calls] == ["a", "a"]
    assert state(router, "a") == "closed"


async def test_a_resume_prefers_a_replica_that_has_the_model_loaded(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, client = make_router({"a": [[0.1, "x", PeerConnectionLost("a", "reset")]],
                                        "cold": [ok()], "warm": [ok()]})
    router.weights = type(router.weights)(free_memory=0, load=0, latency=1, throughput=0)
    node.registry.get("cold").rtt_ms = 2.0  # type: ignore[union-attr]  # ranks above warm
    node.registry.get("warm").rtt_ms = 400.0  # type: ignore[union-attr]
    entry = node.registry.get("cold")
    assert entry is not None and entry.info is not None
    entry.info = dataclasses.replace(entry.info, models=tuple(
        dataclasses.replace(m, loaded=False) for m in entry.info.models))
    text, _ = await run(router)
    assert text == "xab"
    assert [p for p, _, _ in client.calls] == ["a", "warm"]


async def test_a_resume_that_would_exceed_the_prompt_limit_ends_the_answer_cleanly(
        autojump_clock: trio.abc.Clock) -> None:
    from peerllm.wire import limits

    router, node, _ = make_router({"a": [[0.1, "xy", PeerConnectionLost("a", "reset")]],
                                   "b": [ok()]})
    req = GenerationRequest(model=MODEL, prompt="p" * (limits.MAX_PROMPT_CHARS - 1),
                            params=SamplingParams(max_tokens=8))
    text: list[str] = []

    async def read() -> None:
        async with router.open(req) as routed:
            async for ev in routed.events():
                if isinstance(ev, TokenChunk):
                    text.append(ev.text)

    with pytest.raises(InferenceRejected) as err:
        await read()
    assert text == ["xy"]
    assert (err.value.code, err.value.retryable) == ("too_large", False)
    assert state(router, "b") == "closed" and "b" not in node.suspected


async def test_a_resume_with_nowhere_left_meets_a_restarted_replica_again(
        autojump_clock: trio.abc.Clock) -> None:
    # "a" was killed moments ago and has restarted, but the registry still lists it
    # unreachable (its last node-info call failed); then "b" dies mid-stream.
    router, node, client = make_router({"a": [ok()],
                                        "b": [[0.1, "x", PeerConnectionLost("b", "reset")]]})
    node.registry.failed("a", "write failed: StreamReset()", now=time.time(), max_misses=1)
    router.breakers.peer_down("a")
    node.host.down.add("b")

    async def membership_redials_a() -> None:
        await trio.sleep(0.05)
        node.restart("a", b"\x02" * 16)  # it answers node-info: a new process

    node.on_discover = membership_redials_a
    text, done = await run(router)
    assert text == "xab" and done.completion_tokens == 3   # not lost
    assert [p for p, _, _ in client.calls] == ["b", "a"] and node.discovered == [MODEL]


async def test_asking_membership_again_is_bounded_once_every_candidate_failed(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, client = make_router({"a": [[0.1, "x", PeerConnectionLost("a", "reset")]]})
    node.host.down.add("a")
    node.on_discover = trio.sleep_forever  # e.g. a DHT walk that hangs on dead peers
    start = trio.current_time()
    with pytest.raises(NoRoute):
        await run(router)
    assert trio.current_time() - start == pytest.approx(0.1 + REDISCOVER_WAIT_S)
    assert node.discovered == [MODEL] and len(client.calls) == 1



async def test_a_structured_answer_that_breaks_mid_way_is_not_resumed(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, client = make_router({"a": [[0.1, "{\"a\"", PeerConnectionLost("a", "reset")]],
                                        "b": [ok()]})
    req = GenerationRequest(model=MODEL, prompt="p", params=SamplingParams(
        max_tokens=8, json_schema='{"type":"object"}'))
    text: list[str] = []

    async def read() -> None:
        async with router.open(req) as routed:
            async for ev in routed.events():
                if isinstance(ev, TokenChunk):
                    text.append(ev.text)

    with pytest.raises(InferenceRejected, match="json_schema") as err:
        await read()
    assert text == ['{"a"']
    assert (err.value.code, err.value.retryable) == ("bad_request", False)
    assert [peer for peer, *_ in client.calls] == ["a"]  # b never got a half answer to finish
    assert state(router, "b") == "closed" and "b" not in node.suspected
