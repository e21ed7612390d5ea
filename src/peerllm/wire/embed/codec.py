"""Embed messages to and from frame maps, with the infer codec's strict rules.

Exact types, errors name the field path, unknown keys are ignored; a sender runs the
receiver's checks on its own map (our bad message is a LocalProtocolError). The error
frame (``t: "error"``) is decoded and encoded by the infer codec itself.
"""

from __future__ import annotations

from typing import Any

from ...errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .. import infer as wi
from .. import limits
from .._fields import (
    INT64_MAX,
    FieldError,
    MapReader,
    check_str,
    checked_as_sent,
    read_envelope,
)
from .messages import (
    MAX_AUTH_CHARS,
    MAX_CHARS,
    MAX_DEADLINE_MS,
    MAX_DIMS,
    MAX_ID_LEN,
    MAX_INPUTS,
    MAX_VALUES,
    PROTOCOL_VERSION,
    Embeddings,
    EmbedRequest,
    Error,
    Message,
)


class _SizeError(FieldError):
    """Over a size limit: reported as FRAME_TOO_LARGE (the ``too_large`` code)."""


def message_to_map(msg: Message) -> dict[str, Any]:
    """The frame map of ``msg``, checked against the rules the receiver applies.

    Raises:
        LocalProtocolError: a conforming receiver would reject ``msg``.
    """
    if isinstance(msg, Error):
        return wi.message_to_map(msg)
    m: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if isinstance(msg, EmbedRequest):
        m.update(t="embed", id=msg.request_id, model=msg.model, inputs=list(msg.inputs),
                 deadline_ms=msg.deadline_ms)
        if msg.auth is not None:
            m["auth"] = msg.auth
    elif isinstance(msg, Embeddings):
        m.update(t="embeddings", id=msg.request_id, served_by=msg.served_by, model=msg.model,
                 dims=msg.dims, vectors=msg.vectors, prompt_tokens=msg.prompt_tokens)
        if msg.receipt is not None:
            m["receipt"] = msg.receipt
    else:
        raise LocalProtocolError(f"not an embed message: {type(msg).__name__}",
                                 code=ErrorCode.UNKNOWN_MESSAGE)
    return checked_as_sent(m, message_from_map)


def message_from_map(m: Any) -> Message:
    """Decode one frame map of this protocol.

    Raises:
        RemoteProtocolError: UNSUPPORTED_VERSION if ``v`` is not 1, UNKNOWN_MESSAGE for
            an unknown ``t``, FRAME_TOO_LARGE for a request or answer over a count
            limit, BAD_FRAME for anything else malformed; the message names the field.
    """
    try:
        r, kind = read_envelope(m, protocol="embed", version=PROTOCOL_VERSION,
                                max_kind_len=wi.MAX_CODE_LEN)
        if kind == "error":
            return _error(m)
        if kind == "embed":
            return _request(r, m)
        if kind == "embeddings":
            return _answer(r, m)
        raise RemoteProtocolError(f"unknown embed message type {kind!r}",
                                  code=ErrorCode.UNKNOWN_MESSAGE)
    except _SizeError as exc:
        raise RemoteProtocolError(f"embed message: {exc}",
                                  code=ErrorCode.FRAME_TOO_LARGE) from exc
    except FieldError as exc:
        raise RemoteProtocolError(f"embed message: {exc}") from exc


def _error(m: dict[str, Any]) -> Error:
    err = wi.message_from_map(m)  # the same frame as infer's (same version too)
    if not isinstance(err, Error):  # unreachable: ``t`` is "error"
        raise FieldError("t", "expected an error frame")
    return err


def _opt_jwt(r: MapReader, m: dict[str, Any], key: str) -> str | None:
    if m.get(key) is None:
        return None
    return r.get_str(key, max_len=MAX_AUTH_CHARS, min_len=1)


def _request(r: MapReader, m: dict[str, Any]) -> EmbedRequest:
    items = r.get_list("inputs", max_items=INT64_MAX)
    if len(items) > MAX_INPUTS:
        raise _SizeError("inputs", f"{len(items)} inputs exceed {MAX_INPUTS}")
    if not items:
        raise FieldError("inputs", "must hold at least one input")
    texts = tuple(check_str(item, path, max_len=MAX_CHARS) for item, path in items)
    total = sum(len(t) for t in texts)
    if total > MAX_CHARS:
        raise _SizeError("inputs", f"{total} chars exceed {MAX_CHARS}")
    return EmbedRequest(
        request_id=r.get_int("id", lo=1),
        model=r.get_str("model", max_len=limits.MAX_MODEL_ID_CHARS, min_len=1),
        inputs=texts,
        deadline_ms=r.get_int("deadline_ms", lo=1, hi=MAX_DEADLINE_MS),
        auth=_opt_jwt(r, m, "auth"))


def _answer(r: MapReader, m: dict[str, Any]) -> Embeddings:
    dims = r.get_int("dims", lo=1, hi=MAX_DIMS)
    vectors = r.get_bytes("vectors", max_len=4 * MAX_VALUES)
    if not vectors or len(vectors) % (4 * dims):
        raise FieldError("vectors", f"{len(vectors)} bytes is not a positive multiple of "
                                    f"4 x dims ({4 * dims})")
    return Embeddings(
        request_id=r.get_int("id", lo=1),
        served_by=r.get_str("served_by", max_len=MAX_ID_LEN, min_len=1),
        model=r.get_str("model", max_len=MAX_ID_LEN, min_len=1),
        dims=dims, vectors=vectors,
        prompt_tokens=r.get_int("prompt_tokens"),
        receipt=_opt_jwt(r, m, "receipt"))
