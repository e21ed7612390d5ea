"""Infer messages to and from frame maps, checked with the same strict rules on both ends.

Exact types (``bool`` is not ``int``), errors name the field path, unknown keys are
ignored; a sender runs the receiver's checks on its own map, so our own bad message is
a ``LocalProtocolError`` and a peer's a ``RemoteProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ...errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .. import limits
from .._fields import (
    INT64_MAX,
    FieldError,
    MapReader,
    check_float,
    check_int,
    checked_as_sent,
    read_envelope,
)
from ..load import load_to_map, read_load
from .messages import (
    ERROR_CODES,
    FINISH_REASONS,
    MAX_AUTH_CHARS,
    MAX_CODE_LEN,
    MAX_DEADLINE_MS,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ID_LEN,
    MAX_JSON_SCHEMA_CHARS,
    MAX_LOAD_COUNT,
    MAX_LOGIT_BIAS,
    MAX_LOGIT_BIAS_VALUE,
    MAX_MESSAGES,
    MAX_PENALTY,
    MAX_PROMPT_CHARS,
    MAX_REPEAT_PENALTY,
    MAX_STOP,
    MAX_STOP_CHARS,
    MAX_TEMPERATURE,
    MAX_TOKEN_ID,
    MAX_TOKEN_TEXT_CHARS,
    MAX_TOKENS_CAP,
    MAX_TOP_K,
    PROTOCOL_VERSION,
    ROLES,
    Accepted,
    Cancel,
    ChatTurn,
    Done,
    Error,
    InferRequest,
    Message,
    Sampling,
    Tokens,
)


def message_to_map(msg: Message) -> dict[str, Any]:
    """The frame map of ``msg``, checked against the same rules the receiver applies.

    ``Error.message`` is truncated to MAX_ERROR_MESSAGE_CHARS; nothing else is altered.

    Raises:
        LocalProtocolError: ``msg`` would be rejected by a conforming receiver, or an
            Error's ``code`` is not in ERROR_CODES.
    """
    m: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if isinstance(msg, InferRequest):
        s = msg.sampling
        m.update(
            t="req",
            id=msg.request_id,
            model=msg.model,
            messages=None
            if msg.messages is None
            else [{"role": turn.role, "content": turn.content} for turn in msg.messages],
            prompt=msg.prompt,
            sampling={
                "max_tokens": s.max_tokens,
                "temperature": _as_float(s.temperature),
                "top_p": _as_float(s.top_p),
                "top_k": s.top_k,
                "repeat_penalty": _as_float(s.repeat_penalty),
                "stop": list(s.stop),
                "seed": s.seed,
                **_optional_sampling(s),
            },
            deadline_ms=msg.deadline_ms,
            resume_text=msg.resume_text,
            session=msg.session,
        )
        if msg.auth is not None:  # optional: absent from older clients, and when unsigned
            m["auth"] = msg.auth
        if msg.reuse:  # optional: absent from older clients, and when not offered
            m["reuse"] = True
    elif isinstance(msg, Accepted):
        m.update(t="accepted", id=msg.request_id, served_by=msg.served_by, model=msg.model)
        if msg.load is not None:
            m["load"] = load_to_map(msg.load)
        if msg.reuse:  # optional: absent from older servers, which close after done
            m["reuse"] = True
    elif isinstance(msg, Tokens):
        m.update(t="tokens", id=msg.request_id, text=msg.text, n_tokens=msg.n_tokens)
    elif isinstance(msg, Done):
        m.update(
            t="done",
            id=msg.request_id,
            finish_reason=msg.finish_reason,
            prompt_tokens=msg.prompt_tokens,
            completion_tokens=msg.completion_tokens,
            ttft_ms=None if msg.ttft_ms is None else _as_float(msg.ttft_ms),
            total_ms=_as_float(msg.total_ms),
        )
        if msg.receipt is not None:
            m["receipt"] = msg.receipt
    elif isinstance(msg, Error):
        if msg.code not in ERROR_CODES:
            raise LocalProtocolError(f"error code {msg.code!r} is not one of {sorted(ERROR_CODES)}")
        m.update(
            t="error",
            id=msg.request_id,
            code=msg.code,
            message=msg.message[:MAX_ERROR_MESSAGE_CHARS],
            retryable=msg.retryable,
            retry_after_ms=msg.retry_after_ms,
        )
    elif isinstance(msg, Cancel):
        m.update(t="cancel", id=msg.request_id)
    else:
        raise LocalProtocolError(
            f"not an infer message: {type(msg).__name__}", code=ErrorCode.UNKNOWN_MESSAGE
        )
    return checked_as_sent(m, message_from_map)


def _optional_sampling(s: Sampling) -> dict[str, Any]:
    """The sampling keys 1.x added later, only when they say something: a request that
    uses none of them is the same map older servers know."""
    m: dict[str, Any] = {}
    if s.presence_penalty != 0.0:
        m["presence_penalty"] = _as_float(s.presence_penalty)
    if s.frequency_penalty != 0.0:
        m["frequency_penalty"] = _as_float(s.frequency_penalty)
    if s.logit_bias:
        m["logit_bias"] = [[token, _as_float(bias)] for token, bias in s.logit_bias]
    if s.json_schema is not None:
        m["json_schema"] = s.json_schema
    return m


def _as_float(value: float) -> Any:
    # Keep non-numbers (a caller bug) as they are so the receiver rules report them.
    return float(value) if type(value) is int else value


class _SizeError(FieldError):
    """A request is over a size limit: reported as FRAME_TOO_LARGE (``too_large``)."""


def message_from_map(m: Any) -> Message:
    """Decode one frame map of this protocol.

    Raises:
        RemoteProtocolError: code UNSUPPORTED_VERSION if ``v`` is not 1 (checked
            before ``t``), UNKNOWN_MESSAGE for an unknown ``t``, FRAME_TOO_LARGE for a
            request over MAX_MESSAGES or MAX_PROMPT_CHARS, BAD_FRAME for anything else
            malformed; the message names the field path.
    """
    try:
        r, kind = read_envelope(m, protocol="infer", version=PROTOCOL_VERSION,
                                max_kind_len=MAX_CODE_LEN)
        decode = _DECODERS.get(kind)
        if decode is None:
            raise RemoteProtocolError(
                f"unknown infer message type {kind!r}", code=ErrorCode.UNKNOWN_MESSAGE
            )
        return decode(r, m)
    except _SizeError as exc:
        raise RemoteProtocolError(f"infer request: {exc}", code=ErrorCode.FRAME_TOO_LARGE) from exc
    except FieldError as exc:
        raise RemoteProtocolError(f"infer message: {exc}") from exc


def _path(r: MapReader, key: str) -> str:
    return f"{r.path}.{key}" if r.path else key


def _float_in(r: MapReader, key: str, *, hi: float, lo_open: bool = False) -> float:
    """A float in [0, hi], or (0, hi] with ``lo_open``."""
    value = r.get_float(key)  # finite and >= 0
    if value > hi or (lo_open and value == 0.0):
        interval = f"{'(' if lo_open else '['}0, {hi:g}]"
        raise FieldError(_path(r, key), f"expected float in {interval}, got {value!r}")
    return value


def _signed(value: Any, path: str, *, bound: float) -> float:
    """A float in [-bound, bound]; nil is 0 (the optional sampling keys)."""
    if value is None:
        return 0.0
    number = check_float(value, path, lo=-bound)
    if number > bound:
        raise FieldError(path, f"expected float in [-{bound:g}, {bound:g}], got {value!r}")
    return number


def _logit_bias(r: MapReader, m: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    if m.get("logit_bias") is None:
        return ()
    pairs: list[tuple[int, float]] = []
    seen: set[int] = set()
    for item, path in r.get_list("logit_bias", max_items=MAX_LOGIT_BIAS):
        if type(item) is not list or len(item) != 2:
            raise FieldError(path, "expected a [token, bias] pair")
        token = check_int(item[0], f"{path}[0]", hi=MAX_TOKEN_ID)
        if token in seen:
            raise FieldError(f"{path}[0]", f"token {token} appears twice")
        seen.add(token)
        pairs.append((token, _signed(item[1], f"{path}[1]", bound=MAX_LOGIT_BIAS_VALUE)))
    return tuple(pairs)


def _json_schema(r: MapReader, m: dict[str, Any]) -> str | None:
    if m.get("json_schema") is None:
        return None
    return r.get_str("json_schema", max_len=MAX_JSON_SCHEMA_CHARS, min_len=1)


def _request(r: MapReader, m: dict[str, Any]) -> InferRequest:
    total = 0
    messages: tuple[ChatTurn, ...] | None = None
    if "messages" not in m or m["messages"] is not None:
        items = r.get_list("messages", max_items=INT64_MAX)
        if len(items) > MAX_MESSAGES:
            raise _SizeError("messages", f"{len(items)} messages exceeds {MAX_MESSAGES}")
        if not items:
            raise FieldError("messages", "must hold at least one message")
        turns = []
        for item, path in items:
            turn = MapReader(item, path)
            role = turn.get_str("role", max_len=MAX_CODE_LEN)
            if role not in ROLES:
                raise FieldError(f"{path}.role", f"expected one of {sorted(ROLES)}, got {role!r}")
            content = turn.get_str("content", max_len=INT64_MAX)
            total += len(content)
            turns.append(ChatTurn(role=role, content=content))
        messages = tuple(turns)
    prompt = r.get_opt_str("prompt", max_len=INT64_MAX)
    if (messages is None) == (prompt is None):
        raise FieldError("prompt", "exactly one of messages and prompt must be set")
    resume_text = r.get_str("resume_text", max_len=INT64_MAX)
    total += len(prompt or "") + len(resume_text)
    if total > MAX_PROMPT_CHARS:
        raise _SizeError("prompt", f"{total} prompt chars exceed {MAX_PROMPT_CHARS}")
    session = r.get_opt_str("session", max_len=limits.MAX_SESSION_CHARS)
    if session == "":
        raise FieldError("session", f"must be nil or 1..{limits.MAX_SESSION_CHARS} chars")
    s = r.get_map("sampling")
    raw = m["sampling"]  # a map: get_map checked it
    return InferRequest(
        auth=_opt_jwt(r, m, "auth"),
        request_id=r.get_int("id", lo=1),
        model=r.get_str("model", max_len=limits.MAX_MODEL_ID_CHARS, min_len=1),
        messages=messages,
        prompt=prompt,
        sampling=Sampling(
            max_tokens=s.get_int("max_tokens", lo=1, hi=MAX_TOKENS_CAP),
            temperature=_float_in(s, "temperature", hi=MAX_TEMPERATURE),
            top_p=_float_in(s, "top_p", hi=1.0, lo_open=True),
            top_k=s.get_int("top_k", hi=MAX_TOP_K),
            repeat_penalty=_float_in(s, "repeat_penalty", hi=MAX_REPEAT_PENALTY, lo_open=True),
            stop=s.get_str_tuple("stop", max_items=MAX_STOP, max_len=MAX_STOP_CHARS),
            seed=s.get_opt_int("seed"),
            presence_penalty=_signed(raw.get("presence_penalty"), "sampling.presence_penalty",
                                     bound=MAX_PENALTY),
            frequency_penalty=_signed(raw.get("frequency_penalty"),
                                      "sampling.frequency_penalty", bound=MAX_PENALTY),
            logit_bias=_logit_bias(s, raw),
            json_schema=_json_schema(s, raw),
        ),
        deadline_ms=r.get_int("deadline_ms", lo=1, hi=MAX_DEADLINE_MS),
        resume_text=resume_text,
        session=session,
        reuse=_opt_bool(r, m, "reuse"),
    )


def _opt_bool(r: MapReader, m: dict[str, Any], key: str) -> bool:
    """An optional flag older peers do not send: absent or nil is False."""
    if m.get(key) is None:
        return False
    return r.get_bool(key)


def _opt_jwt(r: MapReader, m: dict[str, Any], key: str) -> str | None:
    """An optional key that older peers do not send at all: absent or nil is None."""
    if m.get(key) is None:
        return None
    return r.get_str(key, max_len=MAX_AUTH_CHARS, min_len=1)


def _accepted(r: MapReader, m: dict[str, Any]) -> Accepted:
    load = None
    if m.get("load") is not None:  # optional; absent from older servers
        load = read_load(r.get_map("load"), max_count=MAX_LOAD_COUNT)
    return Accepted(
        request_id=r.get_int("id", lo=1),
        served_by=r.get_str("served_by", max_len=MAX_ID_LEN, min_len=1),
        model=r.get_str("model", max_len=MAX_ID_LEN, min_len=1),
        load=load,
        reuse=_opt_bool(r, m, "reuse"),
    )


def _tokens(r: MapReader, m: dict[str, Any]) -> Tokens:
    return Tokens(
        request_id=r.get_int("id", lo=1),
        text=r.get_str("text", max_len=MAX_TOKEN_TEXT_CHARS),
        n_tokens=r.get_int("n_tokens", lo=1, hi=MAX_TOKENS_CAP),
    )


def _done(r: MapReader, m: dict[str, Any]) -> Done:
    reason = r.get_str("finish_reason", max_len=MAX_CODE_LEN)
    if reason not in FINISH_REASONS:
        raise FieldError(
            "finish_reason", f"expected one of {sorted(FINISH_REASONS)}, got {reason!r}"
        )
    return Done(
        request_id=r.get_int("id", lo=1),
        finish_reason=reason,
        prompt_tokens=r.get_int("prompt_tokens"),
        completion_tokens=r.get_int("completion_tokens"),
        ttft_ms=r.get_opt_float("ttft_ms"),
        total_ms=r.get_float("total_ms"),
        receipt=_opt_jwt(r, m, "receipt"),
    )


def _error(r: MapReader, m: dict[str, Any]) -> Error:
    retry_after = r.get_opt_int("retry_after_ms")
    if retry_after is not None and retry_after > MAX_DEADLINE_MS:
        raise FieldError("retry_after_ms", f"int {retry_after} outside 0..{MAX_DEADLINE_MS}")
    return Error(
        request_id=r.get_int("id"),
        # Unknown codes are tolerated so that a new code does not need a new version.
        code=r.get_str("code", max_len=MAX_CODE_LEN, min_len=1),
        message=r.get_str("message", max_len=MAX_ERROR_MESSAGE_CHARS),
        retryable=r.get_bool("retryable"),
        retry_after_ms=retry_after,
    )


def _cancel(r: MapReader, m: dict[str, Any]) -> Cancel:
    return Cancel(request_id=r.get_int("id", lo=1))


_DECODERS: Final[dict[str, Callable[[MapReader, dict[str, Any]], Message]]] = {
    "req": _request,
    "accepted": _accepted,
    "tokens": _tokens,
    "done": _done,
    "error": _error,
    "cancel": _cancel,
}


def error_for_violation(exc: RemoteProtocolError, *, request_id: int = 0) -> Error:
    """The Error a server sends, best effort, before resetting a stream that broke the rules.

    FRAME_TOO_LARGE becomes ``too_large``; everything else ``bad_request``.
    """
    code = "too_large" if exc.code is ErrorCode.FRAME_TOO_LARGE else "bad_request"
    message = str(exc)[:MAX_ERROR_MESSAGE_CHARS]
    return Error(request_id=request_id, code=code, message=message, retryable=False)

