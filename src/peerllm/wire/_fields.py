"""Strict, path-reporting readers for decoded msgpack maps (shared by wire modules)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ..errors import ErrorCode, LocalProtocolError, RemoteProtocolError

INT64_MAX: Final = 2**63 - 1

T = TypeVar("T")


class FieldError(ValueError):
    """A field is missing or has the wrong type or range; ``path`` names it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '<root>'}: {problem}")
        self.path = path
        self.problem = problem


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_int(value: Any, path: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    # bool is a subclass of int in Python but a distinct type on the wire.
    if type(value) is not int:
        raise FieldError(path, f"expected int, got {_type_name(value)}")
    if not lo <= value <= hi:
        raise FieldError(path, f"int {value} outside {lo}..{hi}")
    return value


def check_float(value: Any, path: str, *, lo: float = 0.0) -> float:
    """A finite number >= ``lo``; ints are accepted and converted."""
    if type(value) is not float and type(value) is not int:
        raise FieldError(path, f"expected float, got {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number) or number < lo:
        raise FieldError(path, f"number {value!r} is not finite and >= {lo}")
    return number


def check_str(value: Any, path: str, *, max_len: int, min_len: int = 0) -> str:
    """A str of ``min_len``..``max_len`` characters (code points)."""
    if type(value) is not str:
        raise FieldError(path, f"expected str, got {_type_name(value)}")
    if not min_len <= len(value) <= max_len:
        raise FieldError(path, f"str length {len(value)} outside {min_len}..{max_len}")
    return value


def check_bytes(
    value: Any, path: str, *, size: int | None = None, max_len: int = INT64_MAX
) -> bytes:
    if type(value) is not bytes:
        raise FieldError(path, f"expected bytes, got {_type_name(value)}")
    if size is not None and len(value) != size:
        raise FieldError(path, f"expected exactly {size} bytes, got {len(value)}")
    if len(value) > max_len:
        raise FieldError(path, f"{len(value)} bytes exceeds {max_len}")
    return value


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


class MapReader:
    """Typed access to one decoded map; every error names the full field path.

    Keys the reader is never asked about are ignored (forward compatibility).
    """

    __slots__ = ("_map", "path")

    def __init__(self, value: Any, path: str = "") -> None:
        if type(value) is not dict:
            raise FieldError(path, f"expected map, got {_type_name(value)}")
        self._map: dict[Any, Any] = value
        self.path = path

    def _get(self, key: str) -> Any:
        if key not in self._map:
            raise FieldError(_join(self.path, key), "missing")
        return self._map[key]

    def _optional(self, key: str, check: Callable[[Any, str], T]) -> T | None:
        value = self._get(key)
        return None if value is None else check(value, _join(self.path, key))

    def has(self, key: str) -> bool:
        """True when the map holds ``key`` (for fields added in a later 1.x)."""
        return key in self._map

    def child_path(self, key: str) -> str:
        """The full path of ``key`` in this map, for errors raised by the caller."""
        return _join(self.path, key)

    def get_int(self, key: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
        return check_int(self._get(key), _join(self.path, key), lo=lo, hi=hi)

    def get_opt_int(self, key: str) -> int | None:
        return self._optional(key, check_int)

    def get_added_opt_int(self, key: str) -> int | None:
        """An optional int added in a later 1.x: absent (an older sender) reads as None."""
        return None if key not in self._map else self.get_opt_int(key)

    def get_bool(self, key: str) -> bool:
        value = self._get(key)
        if type(value) is not bool:
            raise FieldError(_join(self.path, key), f"expected bool, got {_type_name(value)}")
        return value

    def get_float(self, key: str) -> float:
        return check_float(self._get(key), _join(self.path, key))

    def get_opt_float(self, key: str) -> float | None:
        return self._optional(key, check_float)

    def get_str(self, key: str, *, max_len: int, min_len: int = 0) -> str:
        return check_str(self._get(key), _join(self.path, key), max_len=max_len, min_len=min_len)

    def get_opt_str(self, key: str, *, max_len: int) -> str | None:
        return self._optional(key, lambda v, p: check_str(v, p, max_len=max_len))

    def get_bytes(self, key: str, *, size: int | None = None, max_len: int = INT64_MAX) -> bytes:
        return check_bytes(self._get(key), _join(self.path, key), size=size, max_len=max_len)

    def get_list(self, key: str, *, max_items: int) -> list[tuple[Any, str]]:
        """The list's items, each paired with its path (``key[i]``)."""
        path = _join(self.path, key)
        value = self._get(key)
        if type(value) is not list:
            raise FieldError(path, f"expected array, got {_type_name(value)}")
        if len(value) > max_items:
            raise FieldError(path, f"{len(value)} items exceeds {max_items}")
        return [(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def get_str_tuple(
        self, key: str, *, max_items: int, max_len: int, min_len: int = 1
    ) -> tuple[str, ...]:
        return tuple(
            check_str(item, path, max_len=max_len, min_len=min_len)
            for item, path in self.get_list(key, max_items=max_items)
        )

    def get_map(self, key: str) -> MapReader:
        return MapReader(self._get(key), _join(self.path, key))

    def get_map_list(self, key: str, *, max_items: int) -> list[MapReader]:
        return [MapReader(item, path) for item, path in self.get_list(key, max_items=max_items)]


def checked_as_sent(m: dict[str, Any], decode: Callable[[Any], object]) -> dict[str, Any]:
    """``m`` once ``decode`` (the receiver's rules) accepts it.

    Raises:
        LocalProtocolError: ``decode`` refused it; same message and code, since a map
            we built that breaks the rules is our fault, not the peer's.
    """
    try:
        decode(m)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc), code=exc.code) from exc
    return m


def read_envelope(m: Any, *, protocol: str, version: int, max_kind_len: int
                  ) -> tuple[MapReader, str]:
    """A frame map's reader and its message kind ``t``, once its ``v`` is ``version``.

    Raises:
        RemoteProtocolError: UNSUPPORTED_VERSION for another ``v`` (checked before ``t``).
        FieldError: ``m`` is not a map, or ``v``/``t`` is missing or malformed.
    """
    r = MapReader(m)
    got = r.get_int("v")
    if got != version:
        raise RemoteProtocolError(f"{protocol} version {got} is not supported",
                                  code=ErrorCode.UNSUPPORTED_VERSION)
    return r, r.get_str("t", max_len=max_kind_len)
