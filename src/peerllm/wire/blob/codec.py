"""Blob messages to and from frames, and the client's decoder of frames and raw chunks.

The rules of the other protocols' codecs: exact types, errors name the field path,
unknown keys are ignored, a sender runs the receiver's checks on its own map (our bad
message is a LocalProtocolError, a peer's a RemoteProtocolError). Each direction has its
own decoder, so a frame sent the wrong way is an unknown message.

In-stream chunks are not msgpack: a ``chunk`` header frame says how many raw bytes
follow (``AnswerDecoder`` reads them into one buffer), which spares the copies of a 4 MiB
``bin`` and keeps every frame small.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from ...errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .._fields import FieldError, MapReader, checked_as_sent, read_envelope
from ..framing import CLOSED, HEADER_BYTES, NEED_DATA, FrameDecoder, encode_frame, unpack_map
from .manifest import (
    MAX_CHUNKS,
    ModelMeta,
    is_digest,
    manifest_from_map,
    manifest_to_map,
    parse_digest,
)
from .messages import (
    CERT_HASH_BYTES,
    CHUNK_BYTES_LIMIT,
    ERROR_CODES,
    MAX_ANSWER_FRAME_BYTES,
    MAX_CONTEXT_SIZE,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_HOST_CHARS,
    MAX_META_CHARS,
    MAX_RANGE_CHUNKS,
    MAX_REF_CHARS,
    MAX_REQUEST_FRAME_BYTES,
    MAX_RETRY_AFTER_MS,
    PROTOCOL_VERSION,
    TOKEN_BYTES,
    Answer,
    Chunk,
    ChunkHeader,
    Describe,
    Described,
    Done,
    Error,
    Fallback,
    Get,
    Offer,
    Request,
    ref_problem,
)

_KIND_CHARS: Final = 16
_HEADER: Final = struct.Struct(">I")


def _envelope(m: Any) -> tuple[MapReader, str]:
    return read_envelope(m, protocol="blob", version=PROTOCOL_VERSION, max_kind_len=_KIND_CHARS)


def _ref(r: MapReader) -> str:
    ref = r.get_str("ref", max_len=MAX_REF_CHARS, min_len=1)
    problem = ref_problem(ref)
    if problem is not None:
        raise FieldError("ref", f"{ref[:80]!r}: {problem}")
    return parse_digest(ref) if is_digest(ref) else ref


# -- client -> server ------------------------------------------------------------------

def request_to_map(msg: Request) -> dict[str, Any]:
    """The frame map of a client's message, checked as the server will check it.

    Raises:
        LocalProtocolError: the server would refuse it (a bad ref, a range over the limit).
    """
    m: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if isinstance(msg, Describe):
        m.update(t="describe", ref=msg.ref)
    elif isinstance(msg, Get):
        m.update(t="get", ref=msg.ref, first=msg.first, count=msg.count,
                 chunk_bytes=msg.chunk_bytes, size=msg.size, side_channel=msg.side_channel)
    elif isinstance(msg, Fallback):
        m.update(t="fallback")
    else:
        raise LocalProtocolError(f"not a blob request: {type(msg).__name__}",
                                 code=ErrorCode.UNKNOWN_MESSAGE)
    return checked_as_sent(m, request_from_map)


def request_from_map(m: Any) -> Request:
    """Decode a frame the server received.

    Raises:
        RemoteProtocolError: UNSUPPORTED_VERSION, UNKNOWN_MESSAGE, or BAD_FRAME naming
            the field (a ref that is not a digest or a model id is ``ref``).
    """
    try:
        r, kind = _envelope(m)
        if kind == "describe":
            return Describe(ref=_ref(r))
        if kind == "get":
            return Get(ref=_ref(r), first=r.get_int("first", hi=MAX_CHUNKS - 1),
                       count=r.get_int("count", lo=1, hi=MAX_RANGE_CHUNKS),
                       chunk_bytes=r.get_int("chunk_bytes", lo=1, hi=CHUNK_BYTES_LIMIT),
                       size=r.get_int("size"), side_channel=r.get_bool("side_channel"))
        if kind == "fallback":
            return Fallback()
        raise RemoteProtocolError(f"unknown blob request type {kind!r}",
                                  code=ErrorCode.UNKNOWN_MESSAGE)
    except FieldError as exc:
        raise RemoteProtocolError(f"blob request: {exc}") from exc


# -- server -> client ------------------------------------------------------------------

def answer_to_map(msg: Answer) -> dict[str, Any]:
    """The frame map of a server's message, checked as the client will check it.

    ``Error.message`` is cut to MAX_ERROR_MESSAGE_CHARS; nothing else is altered.

    Raises:
        LocalProtocolError: the client would refuse it.
    """
    m: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if isinstance(msg, Described):
        m.update(t="manifest", manifest=manifest_to_map(msg.manifest), have=msg.have,
                 meta=None if msg.meta is None else _meta_to_map(msg.meta))
    elif isinstance(msg, Offer):
        m.update(t="offer", host=msg.host, port=msg.port, cert_sha256=msg.cert_sha256,
                 token=msg.token)
    elif isinstance(msg, ChunkHeader):
        m.update(t="chunk", index=msg.index, length=msg.length)
    elif isinstance(msg, Done):
        m.update(t="done", chunks=msg.chunks)
    elif isinstance(msg, Error):
        m.update(t="error", code=msg.code, message=msg.message[:MAX_ERROR_MESSAGE_CHARS],
                 retry_after_ms=msg.retry_after_ms)
    else:
        raise LocalProtocolError(f"not a blob answer: {type(msg).__name__}",
                                 code=ErrorCode.UNKNOWN_MESSAGE)
    return checked_as_sent(m, answer_from_map)


def _meta_to_map(meta: ModelMeta) -> dict[str, Any]:
    return {"id": meta.id, "type": meta.type, "chat_format": meta.chat_format,
            "context_size": meta.context_size}


def _meta(r: MapReader) -> ModelMeta:
    context = r.get_opt_int("context_size")
    if context is not None and not 1 <= context <= MAX_CONTEXT_SIZE:
        raise FieldError(f"{r.path}.context_size", f"int {context} outside 1..{MAX_CONTEXT_SIZE}")
    return ModelMeta(id=r.get_str("id", max_len=MAX_REF_CHARS, min_len=1),
                     type=r.get_str("type", max_len=MAX_META_CHARS, min_len=1),
                     chat_format=r.get_opt_str("chat_format", max_len=MAX_META_CHARS),
                     context_size=context)


def _described(r: MapReader, m: dict[str, Any]) -> Described:
    r.get_map("manifest")  # present and a map, or a FieldError naming it
    manifest = manifest_from_map(m["manifest"], "manifest")
    meta = None if m.get("meta") is None else _meta(r.get_map("meta"))
    have = None if m.get("have") is None else r.get_bytes("have", size=-(-manifest.count // 8))
    if have is not None and manifest.count % 8 and have[-1] >> (manifest.count % 8):
        raise FieldError("have", f"bits set past chunk {manifest.count - 1}")
    return Described(manifest=manifest, meta=meta, have=have)


def _error(r: MapReader) -> Error:
    code = r.get_str("code", max_len=_KIND_CHARS * 2, min_len=1)
    if code not in ERROR_CODES:
        raise FieldError("code", f"{code!r} is not one of {sorted(ERROR_CODES)}")
    retry = r.get_opt_int("retry_after_ms")
    if retry is not None and retry > MAX_RETRY_AFTER_MS:
        raise FieldError("retry_after_ms", f"int {retry} outside 0..{MAX_RETRY_AFTER_MS}")
    return Error(code=code, retry_after_ms=retry,
                 message=r.get_str("message", max_len=MAX_ERROR_MESSAGE_CHARS))


def answer_from_map(m: Any) -> Answer:
    """Decode a frame the client received.

    Raises:
        RemoteProtocolError: UNSUPPORTED_VERSION, UNKNOWN_MESSAGE, or BAD_FRAME naming
            the field (``manifest.chunks``, ``offer.token``...).
    """
    try:
        r, kind = _envelope(m)
        if kind == "manifest":
            return _described(r, m)
        if kind == "offer":
            return Offer(host=r.get_str("host", max_len=MAX_HOST_CHARS),
                         port=r.get_int("port", lo=1, hi=65535),
                         cert_sha256=r.get_bytes("cert_sha256", size=CERT_HASH_BYTES),
                         token=r.get_bytes("token", size=TOKEN_BYTES))
        if kind == "chunk":
            return ChunkHeader(index=r.get_int("index", hi=MAX_CHUNKS - 1),
                               length=r.get_int("length", lo=1, hi=CHUNK_BYTES_LIMIT))
        if kind == "done":
            return Done(chunks=r.get_int("chunks", hi=MAX_RANGE_CHUNKS))
        if kind == "error":
            return _error(r)
        raise RemoteProtocolError(f"unknown blob answer type {kind!r}",
                                  code=ErrorCode.UNKNOWN_MESSAGE)
    except FieldError as exc:
        raise RemoteProtocolError(f"blob answer: {exc}") from exc


# -- frames ----------------------------------------------------------------------------

def encode_request(msg: Request) -> bytes:
    return encode_frame(request_to_map(msg), max_frame_bytes=MAX_REQUEST_FRAME_BYTES)


def encode_answer(msg: Answer) -> bytes:
    return encode_frame(answer_to_map(msg), max_frame_bytes=MAX_ANSWER_FRAME_BYTES)


def error_for_violation(exc: RemoteProtocolError) -> Error:
    """The ``bad_request`` a server sends, best effort, before resetting a stream that
    broke the rules."""
    return Error(code="bad_request", message=str(exc)[:MAX_ERROR_MESSAGE_CHARS])


class RequestDecoder:
    """The server's decoder: frames of at most MAX_REQUEST_FRAME_BYTES, requests only."""

    def __init__(self) -> None:
        self._frames = FrameDecoder(MAX_REQUEST_FRAME_BYTES)

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_event(self) -> Request | type[NEED_DATA] | type[CLOSED]:
        """Raises RemoteProtocolError (framing or request_from_map)."""
        frame = self._frames.next_frame()
        if frame is NEED_DATA or frame is CLOSED:
            return frame
        return request_from_map(frame)


class AnswerDecoder:
    """The client's decoder: answer frames, and after each ``chunk`` header its raw bytes
    returned whole as one ``Chunk`` (the header itself is not an event).

    Poisoned by its first error, as FrameDecoder is.
    """

    def __init__(self, max_chunk_bytes: int = CHUNK_BYTES_LIMIT) -> None:
        # A client that asked for chunk_bytes-sized chunks sets this to chunk_bytes, so a
        # peer cannot make it buffer a 64 MiB "chunk" before its length is checked.
        self.max_chunk_bytes = max_chunk_bytes
        self._buf = bytearray()
        self._raw: bytearray | None = None  # the chunk being read
        self._header: ChunkHeader | None = None
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Buffer bytes; ``b""`` means end of stream.

        Raises:
            LocalProtocolError: bytes fed after EOF (a caller bug).
        """
        if self._eof:
            raise LocalProtocolError("AnswerDecoder.feed() called after EOF")
        if not data:
            self._eof = True
        elif self._raw is not None and not self._buf:
            need = self._header.length - len(self._raw) if self._header else 0
            self._raw += data[:need]  # straight into the chunk: no second buffer
            self._buf += data[need:]
        else:
            self._buf += data

    def next_event(self) -> Answer | Chunk | type[NEED_DATA] | type[CLOSED]:
        """The next answer or whole chunk, NEED_DATA, or CLOSED after a clean end.

        Raises:
            RemoteProtocolError: a frame over MAX_ANSWER_FRAME_BYTES, an undecodable or
                invalid answer, or the stream ending inside a frame or a chunk.
        """
        if self._error is not None:
            raise RemoteProtocolError(f"blob decoder already failed: {self._error}",
                                      code=self._error.code) from self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._raw = None
            raise

    def _next(self) -> Answer | Chunk | type[NEED_DATA] | type[CLOSED]:
        if self._raw is not None and self._header is not None:
            return self._chunk(self._header, self._raw)
        buf = self._buf
        if len(buf) < HEADER_BYTES:
            return self._starved(mid=bool(buf), what="a frame")
        (length,) = _HEADER.unpack_from(buf)
        if length == 0:
            raise RemoteProtocolError("zero-length frame")
        if length > MAX_ANSWER_FRAME_BYTES:
            raise RemoteProtocolError(f"peer announced a {length}-byte frame; the limit is "
                                      f"{MAX_ANSWER_FRAME_BYTES}", code=ErrorCode.FRAME_TOO_LARGE)
        if len(buf) < HEADER_BYTES + length:
            return self._starved(mid=True, what="a frame")
        body = bytes(buf[HEADER_BYTES:HEADER_BYTES + length])
        del buf[:HEADER_BYTES + length]
        msg = answer_from_map(unpack_map(body, what="blob frame"))
        if not isinstance(msg, ChunkHeader):
            return msg
        if msg.length > self.max_chunk_bytes:
            raise RemoteProtocolError(f"chunk.length: {msg.length} bytes announced for chunk "
                                      f"{msg.index}; chunks here are at most "
                                      f"{self.max_chunk_bytes}", code=ErrorCode.FRAME_TOO_LARGE)
        self._header, raw = msg, bytearray()
        take = min(len(buf), msg.length)
        raw += buf[:take]
        del buf[:take]
        self._raw = raw
        return self._chunk(msg, raw)

    def _chunk(self, header: ChunkHeader, raw: bytearray) -> Chunk | type[NEED_DATA]:
        if len(raw) < header.length:
            if self._buf:  # feed() put bytes past the chunk aside: move what fits in
                take = header.length - len(raw)
                raw += self._buf[:take]
                del self._buf[:take]
            if len(raw) < header.length:
                self._starved(mid=True, what=f"chunk {header.index}")
                return NEED_DATA
        self._raw = self._header = None
        return Chunk(header.index, bytes(raw))

    def _starved(self, *, mid: bool, what: str) -> type[NEED_DATA] | type[CLOSED]:
        if not self._eof:
            return NEED_DATA
        if mid:
            raise RemoteProtocolError(f"stream ended in the middle of {what}")
        return CLOSED
