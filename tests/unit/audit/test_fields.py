"""Audit field values: whatever a peer or client puts in, the line is valid ASCII JSON."""

from __future__ import annotations

import json
import math

import pytest

from peerllm.audit import fields as f
from peerllm.security_events import AuditEvent, PeerLimit


def test_long_strings_are_cut_and_lone_surrogates_replaced() -> None:
    assert f.text("x" * 1000) == "x" * f.MAX_TEXT + f.TRUNCATED
    assert f.text("a\ud800b") == "a?b"
    assert f.text("ok") == "ok"


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (True, True), (3, 3), (2.5, 2.5),
    (math.nan, "nan"), (math.inf, "inf"),
    pytest.param(10**5000, "<int of 16610 bits>", id="huge-int"),  # str() of it raises
    (b"\x00secret", "<7 bytes>"),        # never written: likely key material
    (PeerLimit.STREAMS, "streams"),
    (("a", 1), ["a", 1]),
    ([["nested"]], ["['nested']"]),
])
def test_values_are_coerced_to_json_scalars_or_flat_lists(value: object, expected: object
                                                          ) -> None:
    assert f.field(value) == expected


def test_long_lists_are_cut_and_say_how_much() -> None:
    assert f.field(list(range(40))) == [*range(f.MAX_ITEMS), "+8 more"]


def test_a_broken_str_does_not_cost_the_line() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert f.field(Broken()) == "<Broken>"


def test_a_line_starts_with_ts_event_node_and_keeps_field_order() -> None:
    line = f.build(ts=1767323045.678, event=AuditEvent.INFERENCE, node="12D3",
                   fields={"model": "m", "ts": "forged", "Bad Key!": 1})
    assert list(line) == ["ts", "event", "node", "model", "ts_", "bad_key_"]
    assert line["ts"] == "2026-01-02T03:04:05.678Z"
    assert (line["event"], line["node"], line["ts_"]) == ("inference", "12D3", "forged")


def test_too_many_fields_are_dropped_and_counted() -> None:
    line = f.build(ts=0.0, event="e", node="n", fields={f"k{i}": i for i in range(40)})
    assert line["dropped_fields"] == 40 - f.MAX_FIELDS
    assert "k31" in line and "k32" not in line


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert f.rfc3339_ms(0.0) == "1970-01-01T00:00:00.000Z"
    assert f.rfc3339_ms(1.9999) == "1970-01-01T00:00:01.999Z"


def test_a_dumped_line_is_one_ascii_line() -> None:
    hostile = "caf\u00e9\n\u2028\x85\ud800\"}"
    text = f.dumps(f.build(ts=0.0, event="e", node="n", fields={"reason": hostile}))
    assert text.isascii() and len(text.splitlines()) == 1
    assert json.loads(text)["reason"] == "caf\u00e9\n\u2028\x85?\"}"
