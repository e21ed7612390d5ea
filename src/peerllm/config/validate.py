"""The one set of value checks every config section uses; each raises ConfigError(key, ...).

``key`` is always the full dotted setting name (``inference.max_queue``), so an error
says which setting to fix whichever layer (file, env, flags) the value came from.
Checks return the normalised value (stripped strings, tuples for lists, floats for
numbers); sections store it with ``set_field`` from their ``__post_init__``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import multiaddr
import multiaddr.exceptions

from ..errors import ConfigError

DEFAULT_P2P_PORT: Final = 7470
QUOTE_HINT: Final = " (quote the value in YAML)"


def set_field(obj: object, name: str, value: object) -> None:
    """Store a normalised value on a frozen dataclass (only from its ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def string(key: str, value: object) -> str:
    if not isinstance(value, str):
        hint = QUOTE_HINT if isinstance(value, int | float | bool) else ""
        raise ConfigError(key, f"expected a string, got {type(value).__name__}{hint}")
    return value


def opt_str(key: str, value: object) -> str | None:
    """None, or a non-blank string (stripped)."""
    if value is None:
        return None
    text = string(key, value).strip()
    if not text:
        raise ConfigError(key, "must not be empty (leave it out to use the default)")
    return text


def choice(key: str, value: object, options: Sequence[str], *, fold_case: bool = False) -> str:
    text = string(key, value).strip()
    if fold_case:
        text = text.lower()
    if text not in options:
        raise ConfigError(key, f"{value!r} is not one of " + ", ".join(options))
    return text


def str_tuple(key: str, value: object) -> tuple[str, ...]:
    """A list (or tuple) of non-blank strings, stripped. A bare string is refused."""
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"expected a list of strings, got {type(value).__name__}")
    items = []
    for i, item in enumerate(value, start=1):
        if not isinstance(item, str):
            hint = QUOTE_HINT if isinstance(item, int | float) else ""
            raise ConfigError(key, f"item {i} should be a string, got {type(item).__name__}"
                              f"{hint}")
        if not item.strip():
            raise ConfigError(key, f"item {i} is empty")
        items.append(item.strip())
    return tuple(items)


def boolean(key: str, value: object) -> bool:
    # YAML's yes/no are already bools; the string "yes" here means someone quoted it.
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def positive_float(key: str, value: object, *, what: str = "a number of seconds") -> float:
    """A finite number > 0 (ints accepted, bools refused), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected {what}, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, f"must be a finite number > 0, got {value!r}")
    return float(value)


def fraction(key: str, value: object, *, high: float = math.inf) -> float:
    """A finite number from 0 to ``high`` (ints accepted, bools refused), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= high:
        bounds = f"0..{high:g}" if math.isfinite(high) else "a number >= 0"
        raise ConfigError(key, f"expected {bounds}, got {value!r}")
    return float(value)


def integer(key: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected a whole number, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(key, f"must be {bounds}, got {value}")
    return value


def opt_path(key: str, value: object) -> Path | None:
    """None, or a non-empty path with ``~`` expanded (YAML files are not shell-expanded)."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ConfigError(key, f"expected a path, got {value!r}")
    return Path(value).expanduser()


def multiaddrs(key: str, value: object, *, need_tcp: bool = False,
               need_peer_id: bool = False) -> tuple[str, ...]:
    addrs = str_tuple(key, value)
    for text in addrs:
        try:
            protocols = [p.name for p in multiaddr.Multiaddr(text).protocols()]
        except (ValueError, multiaddr.exceptions.Error) as exc:
            raise ConfigError(key, f"{text!r} is not a valid multiaddr: {exc}") from None
        if need_tcp and "tcp" not in protocols:
            raise ConfigError(key, f"{text!r} has no /tcp/<port> part "
                              f"(e.g. /ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT})")
        if need_peer_id and protocols[-1:] != ["p2p"]:
            raise ConfigError(key, f"{text!r} must end in /p2p/<peer-id>")
    return addrs
