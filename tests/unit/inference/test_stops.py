"""Stop strings across token boundaries: never emitted, everything before them is."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from peerllm.inference.stops import StopScanner


def run(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(p) for p in pieces)
    if not scanner.stopped:
        out += scanner.flush()
    return out, scanner.stopped


def test_no_stops_passes_everything_through() -> None:
    scanner = StopScanner(())
    assert [scanner.feed(p) for p in ("a", "b", "")] == ["a", "b", ""]


def test_stop_split_over_pieces() -> None:
    scanner = StopScanner(("<end>",))
    assert scanner.feed("hello <e") == "hello "
    assert scanner.feed("n") == ""
    assert scanner.feed("d> more") == ""
    assert scanner.stopped


def test_false_alarm_is_released() -> None:
    scanner = StopScanner(("<end>",))
    assert scanner.feed("a <en") == "a "
    assert scanner.feed("ter") == "<enter"
    assert not scanner.stopped


def test_held_text_flushed_at_the_end() -> None:
    scanner = StopScanner(("###",))
    assert scanner.feed("x##") == "x"
    assert scanner.flush() == "##"


def test_earliest_stop_wins() -> None:
    assert run(["one. two\n"], ("\n", ".")) == ("one", True)


@given(st.text(alphabet="ab.\n", max_size=30), st.lists(st.integers(0, 30), max_size=6),
       st.sampled_from([(".",), ("ab",), ("\n\n", "b."), ("aaa",)]))
def test_same_result_however_the_text_is_split(text: str, cuts: list[int],
                                              stops: tuple[str, ...]) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = (text[: min(hits)], True) if hits else (text, False)
    assert run(pieces, stops) == expected
