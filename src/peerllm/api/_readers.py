"""Readers for JSON request bodies: each checks one field and names it in its ApiError.

Shared by the OpenAI and Ollama parsers in ``schemas``; the limits a request shares with
the wire are not here but in GenerationRequest and SamplingParams, whose InvalidField
``sampling`` and ``generation_request`` turn into a 400 naming the API's field.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, Final

from ..errors import InvalidField
from ..inference.engine import ChatMessage, GenerationRequest, SamplingParams
from ..inference.request import SEED_RANGE, utf8_size
from ..wire import limits
from ..wire.limits import MAX_SESSION_CHARS

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
# The embed protocol's request limits (wire.limits), so every request we accept can go to
# a peer.
MAX_EMBED_INPUTS: Final = limits.MAX_EMBED_INPUTS
MAX_EMBED_CHARS: Final = limits.MAX_EMBED_CHARS

_ROLE_ALIASES: Final = {"system": "system", "developer": "system", "user": "user",
                        "assistant": "assistant"}

Json = dict[str, Any]

_FLOAT_MAX: Final = sys.float_info.max


class ApiError(Exception):
    """A request the API answers with an error. ``param`` names the offending field."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s


def bad(param: str, message: str, *, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code=code)


# -- the body --------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes) -> Json:
    """Decode a request body that must be one JSON object of valid text and finite numbers.

    Every string (keys too) and every number is checked here, once, whatever the endpoint
    (``check_values``): a lone surrogate or ``1e999`` is a 400 naming its field before any
    reader sees it.

    Raises:
        ApiError: 413 past ``MAX_BODY_BYTES``; 400 for invalid JSON, a non-object, a lone
            surrogate or a non-finite number.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes",
                       code="request_too_large")
    if not body.strip():
        raise ApiError(400, "request body is empty; expected a JSON object", code="invalid_json")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:  # its msg and position, never the exception itself
        raise ApiError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}", code="invalid_json") from exc
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})",
                       code="invalid_json") from exc
    except RecursionError as exc:
        raise ApiError(400, "request body is not valid JSON: nested too deeply",
                       code="invalid_json") from exc
    except ValueError as exc:  # NaN/Infinity constants (ours), or an integer too long to read
        raise ApiError(400, "request body is not valid JSON: " + (
            str(exc) if "is not valid JSON" in str(exc) else "a number has too many digits"),
            code="invalid_json") from exc
    if not isinstance(value, dict):
        raise ApiError(400, f"request body must be a JSON object, got {kind(value)}",
                       code="invalid_json")
    check_values(value)
    return value


def check_values(value: Json) -> None:
    """Refuse the first lone surrogate or non-finite number anywhere in ``value``, naming
    its path (``messages[1].content``). Iterative: json.loads already bounds the depth,
    and a walk of our own must not be the thing that overflows the stack."""
    todo: list[tuple[str, object]] = [(k, v) for k, v in value.items()]
    for key in value:
        _text(key, f"key {key!r}" if _valid(key) else "a key")
    while todo:
        path, item = todo.pop()
        if isinstance(item, str):
            _text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise bad(path, "must be finite (a number this large is not)")
        elif isinstance(item, dict):
            for k, v in item.items():
                _text(k, f"a key in {path}")
                todo.append((f"{path}.{k}", v))
        elif isinstance(item, list):
            todo.extend((f"{path}[{i}]", v) for i, v in enumerate(item))


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


# -- field readers (path names the field in errors) ------------------------------------


def model_id(body: Mapping[str, Any], key: str = "model") -> str:
    value = body.get(key)
    if value is None:
        raise bad(key, "required (the id of the model to use)", code="missing_model")
    if not isinstance(value, str):
        raise bad(key, f"expected a model id (a string), got {kind(value)}")
    if not value.strip():
        raise bad(key, "must not be empty")
    return value.strip()


def opt_bool(body: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(path, f"expected true or false, got {kind(value)}")
    return value


def opt_int(body: Mapping[str, Any], key: str, path: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(path, f"expected a whole number, got {kind(value)}")
    return value


def opt_number(body: Mapping[str, Any], key: str, path: str) -> float | None:
    """A finite number; its range is SamplingParams' to check."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(path, f"expected a number, got {kind(value)}")
    # parse_body refuses inf first; an int past float's range would overflow float()
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > _FLOAT_MAX:
        raise bad(path, "must be finite (a number this large is not)")
    return float(value)


def temperature(body: Mapping[str, Any], *, high: float) -> float | None:
    """``temperature`` within a dialect's own range 0..``high`` (the engine allows more)."""
    value = opt_number(body, "temperature", "temperature")
    if value is not None and not 0.0 <= value <= high:
        raise bad("temperature", f"must be >= 0 and <= {high:g}, got {body['temperature']!r}")
    return value


def stop_strings(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad(path, f"expected a string or a list of strings, got {kind(value)}")
    return tuple(items)


def fold_seed(value: int | None) -> int | None:
    return None if value is None else value % SEED_RANGE  # fold any API seed into the engine's


def session(value: object, path: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad(path, f"expected a string, got {kind(value)}")
    if len(value) > MAX_SESSION_CHARS:
        raise bad(path, f"at most {MAX_SESSION_CHARS} characters")
    _text(value, path)
    return value


def _text(value: str, path: str) -> None:
    """Refuse a lone surrogate (``utf8_size``'s InvalidField) with a 400 naming ``path``."""
    try:
        utf8_size(path, value)
    except InvalidField as exc:
        raise bad(path, exc.problem) from exc


def refuse_all(body: Mapping[str, Any], refused: Mapping[str, str]) -> None:
    """``refuse`` each key of ``refused`` (key -> why it is not supported)."""
    for key, message in refused.items():
        refuse(body, key, message)


def refuse(body: Mapping[str, Any], key: str, message: str) -> None:
    """``key`` is fine when absent, null, false or empty; anything else is refused."""
    value = body.get(key)
    if value not in (None, False, "", [], {}):
        raise bad(key, message, code="unsupported")


def _refused(exc: InvalidField, path_of: Mapping[str, str]) -> ApiError:
    """The 400 for a value GenerationRequest or SamplingParams refused, under the API's
    name for it: ``path_of`` maps the exact field (``messages[1].content``) or the part
    before any index (``stop`` for ``stop[2]``); unmapped names are the API's too."""
    base, sep, rest = exc.field.partition("[")
    path = path_of.get(exc.field) or path_of.get(base, base) + sep + rest
    return bad(path, exc.problem, code="prompt_too_large" if exc.too_large else "invalid_value")


def sampling(*, path_of: Mapping[str, str], **values: Any) -> SamplingParams:
    """SamplingParams from the given (non-None) values."""
    kwargs = {k: v for k, v in values.items() if v is not None}
    try:
        return SamplingParams(**kwargs)
    except InvalidField as exc:
        raise _refused(exc, path_of) from exc


def generation_request(*, model: str, messages: tuple[ChatMessage, ...] | None = None,
                       prompt: str | None = None, params: SamplingParams,
                       path_of: Mapping[str, str] | None = None) -> GenerationRequest:
    """The request; the limits shared with the wire (size, text) are checked here."""
    try:
        return GenerationRequest(model=model, messages=messages, prompt=prompt, params=params)
    except InvalidField as exc:
        raise _refused(exc, path_of or {}) from exc


# -- messages --------------------------------------------------------------------------


def _content(value: object, path: str, *, role: str) -> str:
    if value is None and role == "assistant":
        return ""  # OpenAI: an assistant turn that only carried tool calls
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts: only text is supported
        texts: list[str] = []
        for j, part in enumerate(value):
            ppath = f"{path}[{j}]"
            if not isinstance(part, dict) or part.get("type") != "text":
                what = part.get("type") if isinstance(part, dict) else kind(part)
                raise bad(ppath, f"only text content parts are supported, got {what!r}",
                          code="unsupported")
            text = part.get("text")
            if not isinstance(text, str):
                raise bad(f"{ppath}.text", f"expected a string, got {kind(text)}")
            texts.append(text)
        return "\n".join(texts)
    raise bad(path, f"expected a string, got {kind(value)}")


def messages(value: object, *, ollama: bool = False) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list):
        raise bad("messages", f"expected a list of messages, got {kind(value)}")
    if not value:
        raise bad("messages", "must contain at least one message")
    out: list[ChatMessage] = []
    for i, m in enumerate(value):
        path = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(path, f"expected an object, got {kind(m)}")
        role = m.get("role")
        if role in ("tool", "function"):
            raise bad(f"{path}.role", f"{role!r} messages (tool calling) are not supported",
                      code="unsupported")
        if not isinstance(role, str) or role not in _ROLE_ALIASES:
            raise bad(f"{path}.role", f"expected system, user or assistant, got {role!r}")
        if ollama and m.get("images"):
            raise bad(f"{path}.images", "images are not supported", code="unsupported")
        content = _content(m.get("content"), f"{path}.content", role=_ROLE_ALIASES[role])
        out.append(ChatMessage(role=_ROLE_ALIASES[role], content=content))
    return tuple(out)


def inputs(value: object, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad(path, "expected a string or a list of strings (token arrays are not "
                        f"supported), got {kind(value)}")
    if not items:
        raise bad(path, "must not be empty")
    if len(items) > MAX_EMBED_INPUTS:
        raise bad(path, f"at most {MAX_EMBED_INPUTS} inputs, got {len(items)}")
    chars = sum(len(s) for s in items)
    if chars > MAX_EMBED_CHARS:
        raise ApiError(400, f"{path}: the input is {chars} characters; the limit is "
                            f"{MAX_EMBED_CHARS}", param=path, code="prompt_too_large")
    for i, s in enumerate(items):
        _text(s, f"{path}[{i}]" if isinstance(value, list) else path)
    return tuple(items)


