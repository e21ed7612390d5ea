"""The replication rule: who pulls a model next, from the same view on every node."""

from __future__ import annotations

from collections.abc import Set

from hypothesis import given
from hypothesis import strategies as st

from peerllm.scheduling import replication as rep

DIGEST = "sha256:" + "ab" * 32
GIB = 1 << 30

peer_ids = st.text(alphabet="abcdefghijkmnopqrstuvwxyz123456789", min_size=4, max_size=12)
digests = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())


def view(*, target: int, holders: Set[str] = frozenset(), candidates: Set[str],
         pending: Set[str] = frozenset(), digest: str = DIGEST,
         file_bytes: int | None = GIB) -> rep.ModelView:
    return rep.ModelView(digest=digest, model_id="m", target=target,
                         holders=frozenset(holders), pending=frozenset(pending),
                         candidates=frozenset(candidates), file_bytes=file_bytes)


def sighting(peer: str, *, held: tuple[rep.Held, ...] = (), seen_at: float = 100.0,
             ram: int = 16 * GIB, replicates: bool = True,
             pulling: frozenset[str] = frozenset()) -> rep.Sighting:
    return rep.Sighting(peer_id=peer, seen_at=seen_at, ram_total_bytes=ram,
                        replicates=replicates, held=held, pulling=pulling)


def held(replicas: int = 2, *, digest: str = DIGEST, model_id: str = "m",
         memory: int | None = None) -> rep.Held:
    return rep.Held(model_id=model_id, digest=digest, replicas=replicas, file_bytes=GIB,
                    memory_bytes=memory)


# -- the ranking ------------------------------------------------------------------------

@given(digests, st.sets(peer_ids, max_size=20))
def test_the_ranking_is_deterministic_and_independent_of_order(
        digest: str, peers: set[str]) -> None:
    order = sorted(peers)
    assert rep.rank(digest, order) == rep.rank(digest, reversed(order))
    assert set(rep.rank(digest, peers)) == peers


@given(digests, st.sets(peer_ids, max_size=20), st.integers(0, 8), st.integers(0, 8))
def test_at_most_the_deficit_is_chosen_and_only_among_candidates(
        digest: str, peers: set[str], target: int, n_holders: int) -> None:
    ordered = sorted(peers)
    holders, candidates = set(ordered[:n_holders]), set(ordered[n_holders:])
    v = view(target=target, holders=holders, candidates=candidates, digest=digest)
    chosen = rep.pullers(v)
    assert len(chosen) == min(max(0, target - len(holders)), len(candidates))
    assert set(chosen) <= candidates


@given(digests, st.sets(peer_ids, min_size=1, max_size=20), peer_ids, st.integers(1, 6))
def test_a_peer_joining_changes_at_most_one_choice(
        digest: str, peers: set[str], newcomer: str, target: int) -> None:
    before = set(rep.pullers(view(target=target, candidates=peers, digest=digest)))
    after = set(rep.pullers(view(target=target, candidates=peers | {newcomer}, digest=digest)))
    # Rendezvous hashing: the newcomer takes one place or none; nobody else moves.
    assert after == before or (newcomer in after and len(before - after) <= 1
                               and after - before == {newcomer} - before)


@given(digests, st.sets(peer_ids, min_size=1, max_size=20), peer_ids, st.integers(1, 6))
def test_a_peer_that_is_no_candidate_changes_nothing(
        digest: str, peers: set[str], outsider: str, target: int) -> None:
    # "holder" cannot be a generated id: the alphabet has no "l".
    s = rep.views([sighting(p) for p in peers - {outsider}] + [
        sighting(outsider, replicates=False), sighting("holder", held=(held(target),))],
        now=100.0, grace_s=60.0)
    assert rep.pullers(s[DIGEST]) == rep.pullers(
        view(target=target, holders={"holder"}, candidates=peers - {outsider}))


@given(digests, st.sets(peer_ids, min_size=1, max_size=20), st.integers(1, 6),
       st.integers(0, 6))
def test_a_holder_leaving_only_adds_pullers(
        digest: str, peers: set[str], target: int, n_holders: int) -> None:
    ordered = sorted(peers)
    holders, candidates = set(ordered[:n_holders]), set(ordered[n_holders:])
    before = rep.pullers(view(target=target, holders=holders, candidates=candidates,
                              digest=digest))
    if holders:
        gone = min(holders)
        after = rep.pullers(view(target=target, holders=holders - {gone},
                                 candidates=candidates, digest=digest))
        assert after[:len(before)] == before  # the same prefix of one ranking


@given(digests, st.sets(peer_ids, min_size=1, max_size=16), st.integers(1, 6),
       st.integers(1, 4))
def test_pulling_in_rounds_converges_to_the_target(
        digest: str, peers: set[str], target: int, n_holders: int) -> None:
    ordered = sorted(peers)
    holders, rest = set(ordered[:n_holders]), set(ordered[n_holders:])
    start = len(holders)
    for _ in range(3):  # every chosen node pulls; then the view is recomputed
        chosen = rep.pullers(view(target=target, holders=holders, candidates=rest,
                                  digest=digest))
        holders |= set(chosen)
        rest -= set(chosen)
    assert len(holders) == max(start, min(target, len(peers)))


def test_pending_pulls_count_like_holders() -> None:
    v = view(target=3, holders={"a"}, pending={"b"}, candidates={"b", "c", "d", "e"})
    chosen = rep.pullers(v)
    assert len(chosen) == 1 and "b" not in chosen


def test_the_deficit_widens_by_one_candidate_per_patience() -> None:
    v = view(target=2, holders={"a"}, candidates={"b", "c", "d"})
    patience = rep.patience_s(v, grace_s=60.0)
    ranked = rep.rank(DIGEST, {"b", "c", "d"})
    assert rep.chosen(v, short_for_s=patience - 1, grace_s=60.0) == ranked[:1]
    assert rep.chosen(v, short_for_s=patience, grace_s=60.0) == ranked[:2]
    assert rep.chosen(view(target=1, holders={"a"}, candidates={"b"}),
                      short_for_s=1e9, grace_s=60.0) == []  # no deficit: nobody


def test_patience_grows_with_the_file() -> None:
    assert rep.patience_s(view(target=1, candidates=set(), file_bytes=None),
                          grace_s=60.0) == 120.0  # two graces
    assert rep.patience_s(view(target=1, candidates=set(), file_bytes=40 * 10**9),
                          grace_s=60.0) == 4000.0


# -- the view -----------------------------------------------------------------------------

def test_the_view_counts_live_holders_and_the_largest_target() -> None:
    out = rep.views([sighting("a", held=(held(2),)), sighting("b", held=(held(3),)),
                     sighting("old", held=(held(5),), seen_at=10.0), sighting("c"),
                     sighting("d", pulling=frozenset({DIGEST}))],
                    now=100.0, grace_s=60.0)
    v = out[DIGEST]
    assert v.target == 3  # the holder seen 90 s ago (grace 60 s) asks for nothing
    assert v.holders == {"a", "b"} and v.pending == {"d"}
    assert v.candidates == {"c", "d"}


def test_models_without_a_target_are_left_out_unless_we_set_one() -> None:
    sightings = [sighting("a", held=(held(0),)), sighting("b")]
    assert rep.views(sightings, now=100.0, grace_s=60.0) == {}
    assert rep.views(sightings, now=100.0, grace_s=60.0,
                     own_targets={DIGEST: 2})[DIGEST].target == 2


def test_candidates_need_memory_the_feature_and_no_other_version() -> None:
    other = "sha256:" + "cd" * 32
    out = rep.views([sighting("a", held=(held(4, memory=8 * GIB),)),
                     sighting("small", ram=8 * GIB), sighting("old", replicates=False),
                     sighting("v1", held=(held(0, digest=other),)), sighting("ok"),
                     rep.Sighting(peer_id="digesting", seen_at=100.0, ram_total_bytes=16 * GIB,
                                  replicates=True, serves=frozenset({"m"}))],
                    now=100.0, grace_s=60.0)
    assert out[DIGEST].candidates == {"ok"}


# -- our own decision ---------------------------------------------------------------------

def decide(v: rep.ModelView, me: str, *, declined: frozenset[str] = frozenset(),
           backoff: dict[str, rep.Backoff] | None = None) -> rep.Decision:
    local = rep.Local(peer_id=me, disk_free_bytes=100 * GIB, declined=declined,
                      backoff=backoff or {})
    return rep.decide(v, local, now=1000.0, short_for_s=0.0, grace_s=60.0)


def test_only_the_top_candidate_pulls() -> None:
    v = view(target=2, holders={"a"}, candidates={"b", "c", "d"})
    first = rep.rank(DIGEST, {"b", "c", "d"})[0]
    assert [p for p in "bcd" if decide(v, p).pull] == [first]


def test_declined_backing_off_and_a_full_disk_keep_us_out() -> None:
    v = view(target=2, holders={"a"}, candidates={"b"})
    assert decide(v, "b").pull
    assert "deleted" in decide(v, "b", declined=frozenset({DIGEST})).reason
    backoff = rep.after_failure(rep.Backoff(), now=990.0)
    assert "backing off" in decide(v, "b", backoff={DIGEST: backoff}).reason
    low = rep.decide(v, rep.Local(peer_id="b", disk_free_bytes=GIB), now=1000.0,
                     short_for_s=0.0, grace_s=60.0)
    assert not low.pull and "disk" in low.reason


def test_backoff_doubles_up_to_the_cap() -> None:
    b = rep.Backoff()
    waits = []
    for _ in range(10):
        b = rep.after_failure(b, now=0.0, base_s=30.0, cap_s=600.0)
        waits.append(b.retry_at)
    assert waits[:4] == [30.0, 60.0, 120.0, 240.0] and waits[-1] == 600.0


def test_the_worked_example_of_the_protocol_doc() -> None:
    # protocols/replication.md, "Worked example": keep the two in step.
    a, b, c, d = (f"12D3KooWNode{x}" for x in "ABCD")
    digest = "sha256:f6f4e6fa9bd946696b87ed7a671705f0dec338aac9afad60170f5873294daf0b"
    assert rep.rendezvous_key(digest, b).hex()[:16] == "ea90bb28eb936e33"
    assert rep.pullers(view(target=2, holders={a}, candidates={b, c, d},
                            digest=digest)) == [b]
    assert rep.pullers(view(target=3, holders={a, b}, candidates={c, d},
                            digest=digest)) == [d]
    assert rep.pullers(view(target=3, holders={a, d}, candidates={c}, digest=digest)) == [c]
    short = view(target=3, holders={a, b}, candidates={c, d}, digest=digest,
                 file_bytes=10**9)
    assert rep.patience_s(short, grace_s=60.0) == 120.0  # two graces, more than 100 s
    assert rep.chosen(short, short_for_s=119.0, grace_s=60.0) == [d]
    assert rep.chosen(short, short_for_s=120.0, grace_s=60.0) == [d, c]
