"""MCDA properties, anti-herding and the baseline strategies."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.candidates import Candidate
from peerllm.scheduling.mcda import (
    Weights,
    affinity_pick,
    apply_affinity,
    choose_mcda,
    least_connections,
    prefer_loaded,
    rank_by,
    round_robin,
    score,
)


def cand(pid: str, **kw: object) -> Candidate:
    base: dict[str, object] = dict(peer_id=pid, name=pid, local=False, loaded=True, active=0,
                                   queued=0, capacity=1, rtt_ms=5.0, tokens_per_second=30.0,
                                   free_memory_bytes=8 << 30)
    base.update(kw)
    return Candidate(**base)  # type: ignore[arg-type]


cand_st = st.builds(
    lambda i, mem, act, rtt, tps: cand(f"p{i}", free_memory_bytes=mem, active=act, capacity=4,
                                       rtt_ms=rtt, tokens_per_second=tps),
    st.integers(0, 10_000), st.integers(0, 64 << 30), st.integers(0, 8),
    st.floats(0, 500), st.one_of(st.none(), st.floats(1, 200)))


@given(st.lists(cand_st, min_size=2, max_size=8, unique_by=lambda c: c.peer_id),
       st.integers(1, 32 << 30))
def test_more_free_memory_never_lowers_a_score(cands: list[Candidate], extra: int) -> None:
    target = cands[0]
    more = dataclasses.replace(target, free_memory_bytes=(target.free_memory_bytes or 0) + extra)
    before = next(s.total for s in score(cands, Weights()) if s.candidate is target)
    after = next(s.total for s in score([more, *cands[1:]], Weights())
                 if s.candidate is more)
    assert after >= before - 1e-12


@given(st.lists(cand_st, min_size=1, max_size=8, unique_by=lambda c: c.peer_id))
def test_contributions_sum_to_total_and_scores_are_bounded(cands: list[Candidate]) -> None:
    for s in score(cands, Weights()):
        assert 0.0 <= s.total <= 1.0 + 1e-9
        assert abs(sum(s.contributions.values()) * s.multiplier - s.total) < 1e-9


hostile_st = st.builds(
    lambda i, mem, cap, act, rtt, tps: cand(f"p{i}", free_memory_bytes=mem, capacity=cap,
                                            active=act, queued=act, in_flight=act, rtt_ms=rtt,
                                            tokens_per_second=tps),
    st.integers(0, 10_000), st.none() | st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1), st.none() | st.floats(0, 1.7e308),
    st.none() | st.floats(0, 1.7e308))


@given(st.lists(hostile_st, min_size=1, max_size=6, unique_by=lambda c: c.peer_id))
def test_any_numbers_a_peer_reports_score_within_bounds(cands: list[Candidate]) -> None:
    # Node-info fields are only checked to be finite and >= 0: a lying peer must not be
    # able to crash the scheduler (e.g. a drain time that underflows to 0).
    for s in score(cands, Weights()):
        assert 0.0 <= s.total <= 1.0 + 1e-9
        assert all(0.0 <= v <= 1.0 + 1e-9 for v in s.values.values())


def test_strictly_better_peer_ranks_first() -> None:
    good = cand("good", free_memory_bytes=16 << 30, rtt_ms=1.0, tokens_per_second=60.0)
    bad = cand("bad", free_memory_bytes=2 << 30, rtt_ms=20.0, tokens_per_second=10.0,
               active=1)
    assert score([bad, good], Weights())[0].candidate.peer_id == "good"


def test_weights_are_honoured() -> None:
    near = cand("near", rtt_ms=1.0, free_memory_bytes=1 << 30)
    roomy = cand("roomy", rtt_ms=50.0, free_memory_bytes=64 << 30)
    only_latency = Weights(free_memory=0, load=0, latency=1, throughput=0)
    only_memory = Weights(free_memory=1, load=0, latency=0, throughput=0)
    assert score([roomy, near], only_latency)[0].candidate.peer_id == "near"
    assert score([roomy, near], only_memory)[0].candidate.peer_id == "roomy"


def test_degraded_and_half_open_are_halved() -> None:
    a = cand("a")
    b = cand("b", degraded=True)
    c = cand("c", half_open=True)
    by_id = {s.candidate.peer_id: s for s in score([a, b, c], Weights())}
    assert by_id["b"].total == pytest.approx(by_id["a"].total / 2)
    assert by_id["c"].multiplier == 0.5


def test_anti_herding_spreads_near_ties_but_never_picks_a_clearly_worse_peer() -> None:
    peers = [cand(f"tied{i}") for i in range(4)] + [
        cand("worse", active=1, rtt_ms=80.0, free_memory_bytes=1 << 30)]
    scored = score(peers, Weights())
    rng = random.Random(7)
    firsts = Counter(choose_mcda(scored, rng, tie_epsilon=0.05)[0].candidate.peer_id
                     for _ in range(400))
    assert "worse" not in firsts
    assert len(firsts) == 4
    assert max(firsts.values()) < 200


def test_baselines() -> None:
    peers = [cand("a", active=2), cand("b"), cand("c", active=1)]
    assert [c.peer_id for c in least_connections(peers)] == ["b", "c", "a"]
    assert [c.peer_id for c in round_robin(peers, 1)] == ["b", "c", "a"]
    for name in ("mcda", "round_robin", "weighted_round_robin", "least_connections",
                 "latency", "random"):
        ranked, scored = rank_by(name, peers, weights=Weights(), rng=random.Random(1),
                                 counter=0, tie_epsilon=0.05)
        assert sorted(c.peer_id for c in ranked) == ["a", "b", "c"]
        assert len(scored) == 3
    with pytest.raises(ValueError, match="unknown strategy"):
        rank_by("best", peers, weights=Weights(), rng=random.Random(), counter=0,
                tie_epsilon=0.05)


def test_affinity_prefers_the_previous_peer_while_healthy() -> None:
    peers = [cand("a"), cand("b"), cand("c", degraded=True)]
    assert apply_affinity(peers, "b")[0].peer_id == "b"
    assert apply_affinity(peers, "c")[0].peer_id == "a"
    assert apply_affinity(peers, None)[0].peer_id == "a"


CONVERSATION = b"\x07" * 8


def test_without_a_session_peer_the_prefix_holder_goes_first() -> None:
    peers = [cand("a"), cand("b", prefixes=(b"\x01" * 8, CONVERSATION)),
             cand("c", prefixes=(CONVERSATION,))]
    assert [c.peer_id for c in apply_affinity(peers, None, CONVERSATION)] == ["b", "a", "c"]
    assert affinity_pick(peers, None, CONVERSATION) == (1, "prefix")
    # A session's remembered node still wins over a prefix holder...
    assert affinity_pick(peers, "c", CONVERSATION) == (2, "session")
    # ...unless it is gone or unhealthy; then the prefix decides.
    assert affinity_pick(peers, "gone", CONVERSATION) == (1, "prefix")
    assert affinity_pick(peers, None, b"\x09" * 8) is None
    assert affinity_pick(peers, None, None) is None


def test_an_unhealthy_prefix_holder_is_not_preferred() -> None:
    peers = [cand("a"), cand("b", prefixes=(CONVERSATION,), half_open=True),
             cand("c", prefixes=(CONVERSATION,), degraded=True)]
    assert [c.peer_id for c in apply_affinity(peers, None, CONVERSATION)] == ["a", "b", "c"]


@given(st.lists(st.booleans(), max_size=8), st.integers(0, 8))
def test_affinity_only_reorders(holds: list[bool], session: int) -> None:
    peers = [cand(f"p{i}", prefixes=(CONVERSATION,) if h else ()) for i, h in enumerate(holds)]
    out = apply_affinity(peers, f"p{session}", CONVERSATION)
    assert sorted(c.peer_id for c in out) == sorted(c.peer_id for c in peers)
    if peers:
        expected = f"p{session}" if session < len(peers) else next(
            (c.peer_id for c in peers if CONVERSATION in c.prefixes), "p0")
        assert out[0].peer_id == expected


@given(st.lists(st.booleans(), max_size=12))
def test_prefer_loaded_puts_warm_replicas_first_and_keeps_rank_order(loaded: list[bool]
                                                                       ) -> None:
    ranked = [Candidate(peer_id=f"p{i}", name=None, local=False, loaded=w, active=0, queued=0,
                        capacity=1, rtt_ms=1.0) for i, w in enumerate(loaded)]
    out = prefer_loaded(ranked)
    assert sorted(c.peer_id for c in out) == sorted(c.peer_id for c in ranked)
    warm = [c for c in out if c.loaded]
    assert out[:len(warm)] == [c for c in ranked if c.loaded]
    assert out[len(warm):] == [c for c in ranked if not c.loaded]
