"""Ollama keep_alive values: numbers of seconds and Go durations (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from peerllm.api import schemas
from peerllm.api.schemas import ApiError

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), (0, 0.0), ("0", 0.0), ("0s", 0.0), (300, 300.0), (2.5, 2.5),
    ("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3), ("1.5h", 5400.0), ("90", 90.0),
    (-1, math.inf), ("-1", math.inf), ("-5m", math.inf), (" 10s ", 10.0),
])
def test_keep_alive_values(value: Any, seconds: float | None) -> None:
    assert schemas.keep_alive({"keep_alive": value}) == seconds
    gen = schemas.ollama_chat({**CHAT, "keep_alive": value})
    assert gen.keep_alive_s == seconds
    assert schemas.ollama_embed({"model": "m", "input": "x", "keep_alive": value}
                                ).keep_alive_s == seconds


@pytest.mark.parametrize("value", ["5 minutes", "m", "", "1d", "1e999", True, [1], {"s": 1}])
def test_bad_keep_alive_is_refused_by_name(value: Any) -> None:
    with pytest.raises(ApiError) as info:
        schemas.ollama_generate({**CHAT, "prompt": "p", "keep_alive": value})
    assert info.value.status == 400 and info.value.param == "keep_alive"
