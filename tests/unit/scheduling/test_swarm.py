"""The swarm planner: no chunk asked twice outside the endgame, windows bounded, and
every chunk gets done while any source is left."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.scheduling.swarm import (
    FIRST_WINDOW,
    MAX_WINDOW,
    SourceView,
    next_ask,
    window,
)

CB = 4 * 1024 * 1024


def test_faster_sources_get_bigger_windows() -> None:
    assert window(None, None, CB) == FIRST_WINDOW
    slow, fast = window(1e6, 0.01, CB), window(200e6, 0.01, CB)
    assert slow == 1 and 1 < fast <= MAX_WINDOW
    assert window(200e6, 2.0, CB) == MAX_WINDOW
    assert window(30e6, 1.0, CB) > window(30e6, 0.01, CB)


def test_chunks_go_out_lowest_first() -> None:
    ask = next_ask(SourceView("a", None, None, 0), count=10, chunk_bytes=CB,
                   verified={0, 2}, assigned={1: {"b"}})
    assert ask is not None and (ask.first, ask.count) == (3, FIRST_WINDOW)


def test_the_endgame_doubles_a_chunk_for_an_idle_source_only() -> None:
    verified = set(range(9))
    assigned = {9: {"slow"}}
    idle = next_ask(SourceView("fast", 1e8, 0.01, 0), count=10, chunk_bytes=CB,
                    verified=verified, assigned=assigned)
    assert idle is not None and (idle.first, idle.count) == (9, 1)
    busy = next_ask(SourceView("fast", 1e8, 0.01, 1), count=10, chunk_bytes=CB,
                    verified=verified, assigned=assigned)
    assert busy is None
    assert next_ask(SourceView("third", 1e8, 0.01, 0), count=10, chunk_bytes=CB,
                    verified=verified, assigned={9: {"slow", "fast"}}) is None


def test_the_endgame_overtakes_only_a_much_slower_holder() -> None:
    fast = SourceView("fast", 1e8, 0.01, 0)
    common = {"count": 10, "chunk_bytes": CB, "verified": set(range(9)),
              "assigned": {9: {"other"}}}
    assert next_ask(fast, **common, rates={"other": 9e7}) is None  # type: ignore[arg-type]
    ask = next_ask(fast, **common, rates={"other": 1e6})  # type: ignore[arg-type]
    assert ask is not None and ask.first == 9
    unmeasured = SourceView("new", None, None, 0)
    assert next_ask(unmeasured, **common, rates={"other": 1e6}) is None  # type: ignore[arg-type]


def test_a_solo_source_takes_the_whole_open_run() -> None:
    ask = next_ask(SourceView("http", 1e6, 0.01, 0, solo=True), count=100, chunk_bytes=CB,
                   verified={0, 1}, assigned={})
    assert ask is not None and (ask.first, ask.count) == (2, 98)


Event = tuple[str, int]  # (what happens, to which source)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 40),
       rates=st.lists(st.one_of(st.none(), st.floats(1e3, 1e9)), min_size=1, max_size=4),
       events=st.lists(st.tuples(st.sampled_from(["ask", "deliver", "fail"]),
                                 st.integers(0, 3)), max_size=300))
def test_planner_invariants(count: int, rates: list[float | None],
                            events: list[Event]) -> None:
    labels = [f"s{i}" for i in range(len(rates))]
    alive = set(labels)
    verified: set[int] = set()
    assigned: dict[int, set[str]] = {}
    holding: dict[str, list[int]] = {label: [] for label in labels}

    def view(label: str) -> SourceView:
        i = labels.index(label)
        return SourceView(label, rates[i], 0.05, len(holding[label]))

    def ask(label: str) -> None:
        before_open = [i for i in range(count) if i not in verified and not assigned.get(i)]
        got = next_ask(view(label), count=count, chunk_bytes=CB, verified=verified,
                       assigned=assigned)
        if got is None:
            return
        asked = range(got.first, got.first + got.count)
        assert 1 <= got.count <= max(MAX_WINDOW, FIRST_WINDOW)
        assert len(holding[label]) + got.count <= window(rates[labels.index(label)], 0.05, CB)
        for i in asked:
            assert i not in verified and label not in assigned.get(i, set())
            if assigned.get(i):  # an endgame duplicate: only once nothing was left open
                assert not before_open and got.count == 1 and not holding[label]
            assigned.setdefault(i, set()).add(label)
            holding[label].append(i)

    def settle(label: str, delivered: bool) -> None:
        for i in holding[label]:
            if delivered:
                verified.add(i)
            assigned[i].discard(label)
            if not assigned[i]:
                del assigned[i]
        holding[label].clear()

    act: dict[str, Callable[[str], None]] = {
        "ask": ask,
        "deliver": lambda label: settle(label, True),
        "fail": lambda label: (settle(label, False), alive.discard(label)),
    }
    for what, who in events:
        label = labels[who % len(labels)]
        if label in alive and (what != "fail" or len(alive) > 1):
            act[what](label)
    # Liveness: the sources left finish the file by asking and delivering in turn.
    for _ in range(4 * count + 8):
        for label in sorted(alive):
            ask(label)
            settle(label, True)
    assert verified == set(range(count))
