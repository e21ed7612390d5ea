"""Ollama's ``keep_alive``: how long the model stays loaded after a request.

A number is seconds, a string a Go duration (``"5m"``, ``"1h30m"``, ``"300ms"``, ``"0"``)
or a number of seconds (``"-1"``); any negative value means forever, 0 unload now.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from . import _readers as r

_UNIT_S: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                  "m": 60.0, "h": 3600.0}
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION: Final = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def keep_alive(body: Mapping[str, Any]) -> float | None:
    """Seconds to keep the model loaded once idle (math.inf: forever); None if not given."""
    value = body.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, str):
        return _from_text(value.strip())
    seconds = r.opt_number(body, "keep_alive", "keep_alive")  # refuses bools, non-finite
    assert seconds is not None
    return math.inf if seconds < 0 else seconds


def _from_text(text: str) -> float:
    if _NUMBER.fullmatch(text):
        seconds = float(text)
    elif _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(text))
        if text.startswith("-"):
            seconds = -seconds
    else:
        raise r.bad("keep_alive", f"expected a duration such as \"5m\", \"1h30m\" or \"0\", "
                                  f"or a number of seconds, got {text[:40]!r}")
    if not math.isfinite(seconds):
        raise r.bad("keep_alive", "must be finite")
    return math.inf if seconds < 0 else seconds
