"""Length-prefixed msgpack frames shared by every PeerLLM stream protocol (sans-IO).

A frame is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes that
decode to one msgpack map with ``str`` keys (see protocols/framing.md).

``FrameDecoder`` follows h11: ``feed(data)`` buffers bytes (``b""`` means EOF) and
``next_frame()`` returns a decoded map, ``NEED_DATA`` or ``CLOSED``. Callers should
drain ``next_frame()`` until ``NEED_DATA`` before feeding the next chunk, so the
buffer never holds more than one read plus one partial frame.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final, final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints

from ..errors import ErrorCode, LocalProtocolError, RemoteProtocolError

DEFAULT_MAX_FRAME_BYTES: Final = 256 * 1024
"""Largest frame body accepted or produced unless a protocol sets its own cap."""

HEADER_BYTES: Final = 4
_HEADER = struct.Struct(">I")


class _SentinelMeta(type):
    def __repr__(cls) -> str:
        return cls.__name__


@final
class NEED_DATA(metaclass=_SentinelMeta):  # h11-style sentinel: the class is the value
    """Returned by ``next_frame`` when more bytes are needed. Compare with ``is``."""


@final
class CLOSED(metaclass=_SentinelMeta):  # h11-style sentinel: the class is the value
    """Returned by ``next_frame`` after a clean EOF between frames, and from then on."""


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` the one way PeerLLM does (``use_bin_type=True``).

    Raises TypeError, ValueError or OverflowError for values msgpack cannot encode.
    """
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpack_map(data: bytes, *, what: str = "frame") -> dict[str, Any]:
    """Decode ``data`` as exactly one msgpack map with ``str`` keys.

    Every length limit is bounded by ``len(data)``; extension types (including
    msgpack timestamps) are refused. ``what`` names the payload in error messages.

    Raises:
        RemoteProtocolError(code=BAD_FRAME): invalid msgpack, trailing bytes, an
            extension type, a body that is not a map, or a non-``str`` top-level key;
            chained from the msgpack error where there is one.
    """
    limit = len(data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"{what} is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{what} is a msgpack {type(obj).__name__}, not a map")
    for key in obj:
        if not isinstance(key, str):
            raise RemoteProtocolError(f"{what} has a non-str map key {repr(key)[:40]}")
    return obj


def encode_frame(
    obj: Mapping[str, Any], *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> bytes:
    """Return the length prefix plus the msgpack encoding of ``obj``.

    Raises:
        LocalProtocolError(code=FRAME_TOO_LARGE): the body exceeds ``max_frame_bytes``.
        LocalProtocolError(code=BAD_FRAME): a key is not ``str`` or a value cannot be
            packed (unsupported type, integer outside 64 bits).
    """
    for key in obj:
        if not isinstance(key, str):
            raise LocalProtocolError(f"frame key {key!r} is not a str")
    try:
        body = pack(dict(obj))
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"frame cannot be packed: {exc}") from exc
    if len(body) > max_frame_bytes:
        raise LocalProtocolError(
            f"frame of {len(body)} bytes exceeds the {max_frame_bytes}-byte limit",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder for a byte stream of frames; poisoned by its first error."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1 or max_frame_bytes > 0xFFFFFFFF:
            raise ValueError(f"max_frame_bytes must be in 1..2**32-1, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._body_len: int | None = None  # declared length of the frame being read
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Buffer received bytes; ``b""`` signals end of stream.

        Raises:
            LocalProtocolError: bytes fed after EOF (a caller bug).
        """
        if self._eof:
            raise LocalProtocolError("FrameDecoder.feed() called after EOF")
        if not data:
            self._eof = True
        elif self._error is None:
            self._buf += data

    def next_frame(self) -> dict[str, Any] | type[NEED_DATA] | type[CLOSED]:
        """Return the next complete frame's map, ``NEED_DATA`` or ``CLOSED``.

        Raises:
            RemoteProtocolError(code=FRAME_TOO_LARGE): a length prefix above the cap,
                raised as soon as the 4 prefix bytes are buffered.
            RemoteProtocolError(code=BAD_FRAME): zero length, undecodable body, or EOF
                inside a frame. After any error every later call raises again.
        """
        if self._error is not None:
            raise RemoteProtocolError(
                f"frame decoder already failed: {self._error}", code=self._error.code
            ) from self._error
        try:
            return self._next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _next_frame(self) -> dict[str, Any] | type[NEED_DATA] | type[CLOSED]:
        buf = self._buf
        if self._body_len is None:
            if len(buf) < HEADER_BYTES:
                return self._starved(mid_frame=bool(buf))
            (length,) = _HEADER.unpack_from(buf)
            if length == 0:
                raise RemoteProtocolError("zero-length frame")
            if length > self.max_frame_bytes:
                raise RemoteProtocolError(
                    f"peer announced a {length}-byte frame; the limit is {self.max_frame_bytes}",
                    code=ErrorCode.FRAME_TOO_LARGE,
                )
            del buf[:HEADER_BYTES]
            self._body_len = length
        length = self._body_len
        if len(buf) < length:
            return self._starved(mid_frame=True)
        body = bytes(buf[:length])
        del buf[:length]
        self._body_len = None
        return unpack_map(body)

    def _starved(self, *, mid_frame: bool) -> type[NEED_DATA] | type[CLOSED]:
        if not self._eof:
            return NEED_DATA
        if mid_frame:
            raise RemoteProtocolError("stream ended in the middle of a frame")
        return CLOSED
