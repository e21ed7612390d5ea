"""Audit field values made safe for one JSON line: coerced, truncated, never raising.

A field may come from a hostile peer (an address, a record key, a reason naming what it
sent) or from a token (a subject), so nothing is trusted: strings are cut to
``MAX_TEXT`` characters and lone surrogates replaced (they cannot be encoded, and would
break every reader of the file), lists are cut to ``MAX_ITEMS``, non-finite floats and
huge ints become strings, bytes are never written (they are most likely key material),
and anything else is written as its ``str()``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, TypeAlias

Scalar: TypeAlias = str | int | float | bool | None
Field: TypeAlias = Scalar | Sequence[Scalar]
"""What an audit field may hold: a JSON scalar or a flat list of them."""

MAX_TEXT: Final = 256
"""Characters kept of one string; longer ones end in ``TRUNCATED``."""
MAX_ITEMS: Final = 32
"""Items kept of one list; the last item then says how many were left out."""
MAX_FIELDS: Final = 32
"""Fields kept of one line (our events have a dozen); ``dropped_fields`` counts the rest."""
TRUNCATED: Final = "..."
RESERVED: Final = ("ts", "event", "node")
"""Keys every line starts with; a field of that name is written as ``<name>_``."""

_MAX_INT: Final = 2**63
_KEY_JUNK: Final = re.compile(r"[^a-z0-9_]")


def text(value: str) -> str:
    """``value`` cut to MAX_TEXT characters, with lone surrogates replaced by '?'."""
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + TRUNCATED
    return value.encode("utf-8", "replace").decode("utf-8")


def scalar(value: object) -> Scalar:
    """One JSON-safe scalar for any value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):  # StrEnum members too: their value is the string
        return text(str.__str__(value))
    if isinstance(value, int):
        # str() of a huge int raises (sys.int_info.str_digits_check_threshold).
        return int(value) if -_MAX_INT < value < _MAX_INT else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    try:
        return text(str(value))
    except Exception:  # a broken __str__ must not cost the line
        return f"<{type(value).__name__}>"


def field(value: object) -> Field:
    """A scalar, or a list of at most MAX_ITEMS scalars (nested lists become strings)."""
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        kept = [scalar(v) for v in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            kept.append(f"+{len(items) - MAX_ITEMS} more")
        return kept
    return scalar(value)


def key(name: str) -> str:
    """A field name as written: lowercase ``[a-z0-9_]``, at most 64 characters."""
    cleaned = _KEY_JUNK.sub("_", name.lower())[:64] or "_"
    return f"{cleaned}_" if cleaned in RESERVED else cleaned


def rfc3339_ms(ts: float) -> str:
    """``2026-01-02T03:04:05.678Z``: UTC, millisecond precision."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def build(*, ts: float, event: str, node: str, fields: Mapping[str, object]) -> dict[str, Field]:
    """The line as a mapping: ts, event, node first, then the coerced fields in order."""
    line: dict[str, Field] = {"ts": rfc3339_ms(ts), "event": text(event), "node": text(node)}
    for i, (name, value) in enumerate(fields.items()):
        if i == MAX_FIELDS:
            line["dropped_fields"] = len(fields) - MAX_FIELDS
            break
        line[key(name)] = field(value)
    return line


def dumps(line: Mapping[str, Field]) -> str:
    """One line of JSON, ASCII only: no byte of it can be read as a line break."""
    return json.dumps(line, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
