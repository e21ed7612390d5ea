"""The candidate filter: who may get a request, and a named reason for everyone who may not."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling.breaker import Breaker, BreakerConfig, on_failure, on_restart, trip
from peerllm.scheduling.filter import (
    NodeView,
    OfferedModel,
    Policy,
    degraded,
    filter_candidates,
)

PROTO = "/peerllm/infer/1.0.0"
GIB = 2**30
POLICY = Policy(protocol=PROTO, max_info_age_s=15.0)
MODEL = "m"


def view(peer: str = "p1", **kw: object) -> NodeView:
    base = NodeView(peer_id=peer, name=f"node-{peer}", protocols=frozenset({PROTO}),
                    models=(OfferedModel(id=MODEL, loaded=True, size_bytes=GIB),),
                    free_memory_bytes=8 * GIB, total_memory_bytes=16 * GIB, capacity=2,
                    rtt_ms=1.0, info_age_s=1.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def only_reason(v: NodeView, now: float = 100.0, policy: Policy = POLICY) -> str | None:
    f = filter_candidates([v], MODEL, now, policy)
    if f.candidates:
        assert not f.excluded
        return None
    (ex,) = f.excluded
    assert ex.peer_id == v.peer_id and ex.label == v.name
    return ex.reason


def test_a_healthy_fresh_peer_serving_the_model_is_a_candidate() -> None:
    f = filter_candidates([view()], MODEL, 100.0, POLICY)
    (c,) = f.candidates
    assert (c.peer_id, c.loaded, c.capacity, c.half_open, c.degraded) == \
        ("p1", True, 2, False, False)


def test_nodes_without_the_model_are_neither_candidates_nor_excluded() -> None:
    f = filter_candidates([view(models=(OfferedModel(id="other", loaded=True),))], MODEL,
                          100.0, POLICY)
    assert f.candidates == [] and f.excluded == []


def test_every_exclusion_names_its_cause() -> None:
    assert only_reason(view(healthy=False, state_reason="unreachable: dial refused")) \
        == "unreachable: dial refused"
    assert only_reason(view(info_age_s=None)) == "no node-info received yet"
    assert "node-info is 40 s old" in (only_reason(view(info_age_s=40.0)) or "")
    assert only_reason(view(protocols=frozenset({"/other/1"}))) == f"does not speak {PROTO}"
    opened = trip(Breaker(), 90.0)
    assert (only_reason(view(breaker=opened)) or "").startswith("circuit breaker open")
    too_big = (OfferedModel(id=MODEL, loaded=False, size_bytes=20 * GIB),)
    assert "not enough memory to load it: needs 20.00 GiB" in (
        only_reason(view(models=too_big)) or "")


def test_memory_held_by_other_loaded_models_counts_as_reclaimable() -> None:
    models = (OfferedModel(id=MODEL, loaded=False, size_bytes=10 * GIB),
              OfferedModel(id="other", loaded=True, size_bytes=4 * GIB))
    assert only_reason(view(models=models, free_memory_bytes=7 * GIB)) is None
    assert only_reason(view(models=models, free_memory_bytes=5 * GIB)) is not None


def test_the_local_node_skips_network_checks_but_not_memory() -> None:
    local = view(local=True, healthy=False, info_age_s=None, protocols=frozenset(),
                 breaker=trip(Breaker(), 99.0), rtt_ms=None)
    (c,) = filter_candidates([local], MODEL, 100.0, POLICY).candidates
    assert c.local and c.rtt_ms == 0.0 and not c.half_open
    huge = (OfferedModel(id=MODEL, loaded=False, size_bytes=64 * GIB),)
    assert only_reason(replace(local, models=huge)) is not None


def test_a_half_open_peer_is_a_marked_candidate_until_its_trial_slot_is_taken() -> None:
    cfg = BreakerConfig()
    b = trip(Breaker(), 0.0)
    (c,) = filter_candidates([view(breaker=b)], MODEL, cfg.cooldown_s + 1, POLICY).candidates
    assert c.half_open
    taken = replace(b, state=b.state.HALF_OPEN, trials=(cfg.cooldown_s + 1,))
    assert only_reason(view(breaker=taken), now=cfg.cooldown_s + 2) is not None


def test_a_restarted_peer_gets_trial_traffic_at_once() -> None:
    cfg = BreakerConfig()
    b = on_restart(trip(Breaker(), 50.0), 51.0, cfg)
    (c,) = filter_candidates([view(breaker=b)], MODEL, 51.0, POLICY).candidates
    assert c.half_open
    closed = on_failure(Breaker(), 1.0, cfg)
    assert on_restart(closed, 2.0, cfg) == closed


def test_degraded_on_low_memory_or_a_long_queue() -> None:
    assert not degraded(view())
    assert degraded(view(free_memory_bytes=GIB))       # 1 of 16 GiB free
    assert degraded(view(queued=3, capacity=2))
    assert not degraded(view(total_memory_bytes=None))


@st.composite
def views(draw: st.DrawFn) -> list[NodeView]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        out.append(view(
            f"p{i}",
            healthy=draw(st.booleans()),
            info_age_s=draw(st.none() | st.floats(0, 100)),
            protocols=draw(st.sampled_from([frozenset({PROTO}), frozenset()])),
            models=tuple(draw(st.lists(st.builds(
                OfferedModel, id=st.sampled_from([MODEL, "x"]), loaded=st.booleans(),
                size_bytes=st.none() | st.integers(0, 64 * GIB)), max_size=2))),
            free_memory_bytes=draw(st.none() | st.integers(0, 32 * GIB)),
            breaker=draw(st.sampled_from([Breaker(), trip(Breaker(), 99.0)])),
            local=draw(st.booleans())))
    return out


@given(views())
def test_each_node_listing_the_model_is_either_a_candidate_or_excluded_with_a_reason(
        vs: list[NodeView]) -> None:
    f = filter_candidates(vs, MODEL, 100.0, POLICY)
    listing = {v.peer_id for v in vs if any(m.id == MODEL for m in v.models)}
    chosen = {c.peer_id for c in f.candidates}
    refused = {e.peer_id for e in f.excluded}
    assert chosen | refused == listing and not chosen & refused
    assert all(e.reason for e in f.excluded)
    by_id = {v.peer_id: v for v in vs}
    for c in f.candidates:  # nothing a remote candidate needs is missing
        v = by_id[c.peer_id]
        assert v.local or (v.healthy and v.info_age_s is not None
                           and v.info_age_s <= POLICY.max_info_age_s and PROTO in v.protocols)


def test_a_pinned_id_only_lists_the_nodes_serving_that_version() -> None:
    old, new = "sha256:" + "1a2b3c4d" * 8, "sha256:" + "9f8e7d6c" * 8
    views_ = [view("p1", models=(OfferedModel(id=MODEL, loaded=True, digest=old),)),
              view("p2", models=(OfferedModel(id=MODEL, loaded=True, digest=new),)),
              view("p3", models=(OfferedModel(id=MODEL, loaded=True),))]  # not hashed yet
    def peers(model: str) -> list[str]:
        return [c.peer_id for c in filter_candidates(views_, model, 100.0, POLICY).candidates]

    assert peers(MODEL) == ["p1", "p2", "p3"]
    assert peers(f"{MODEL}@1A2B3C4D") == ["p1"]
    assert peers(f"{MODEL}@{new[7:]}") == ["p2"]
    assert peers(f"{MODEL}@00000000") == []
    assert peers(f"{MODEL}@1a2b") == []  # too short to be a pin: nobody lists it


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=70))
def test_split_pin_accepts_exactly_8_to_64_hex_digits(pin: str) -> None:
    from peerllm.scheduling.pins import split_pin

    if 8 <= len(pin) <= 64:
        assert split_pin(f"m@{pin}") == ("m", pin)
    else:
        with pytest.raises(ValueError, match="is not a version pin"):
            split_pin(f"m@{pin}")
