"""Parsing and validating API request bodies (OpenAI and Ollama shapes) into engine requests.

Pure: bytes or decoded JSON in, frozen values out, :class:`ApiError` (a 4xx naming the
offending field) for anything malformed. Unknown keys are ignored, as both upstream APIs
do; keys we know but cannot honour (``n`` > 1, tools, images, ...) are refused rather than
silently dropped, because they change what the caller gets back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..inference.engine import ChatMessage, GenerationRequest, SamplingParams

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
MAX_PROMPT_CHARS: Final = 256 * 1024  # all message contents (or the prompt) together
MAX_TOKENS: Final = 32768  # further capped by the model's context window
MAX_MESSAGES: Final = 4096
MAX_EMBED_INPUTS: Final = 2048
MAX_SESSION_CHARS: Final = 256
SEED_MODULUS: Final = 2**32  # the engine's seed range; larger API seeds are folded into it

_ROLE_ALIASES: Final = {"system": "system", "developer": "system", "user": "user",
                        "assistant": "assistant"}

Json = dict[str, Any]


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


@dataclass(frozen=True, kw_only=True)
class Generation:
    """A parsed chat or completion request."""

    request: GenerationRequest
    stream: bool
    include_usage: bool = False  # OpenAI stream_options.include_usage
    session: str | None = None  # sticky-routing key (OpenAI ``user`` or X-PeerLLM-Session)


@dataclass(frozen=True, kw_only=True)
class Embedding:
    model: str
    inputs: tuple[str, ...]
    base64: bool = False  # OpenAI encoding_format "base64": little-endian float32


@dataclass(frozen=True, kw_only=True)
class LoadRequest:
    model: str
    warmup: bool


# -- the body --------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes) -> Json:
    """Decode a request body that must be one JSON object.

    Raises:
        ApiError: 413 past ``MAX_BODY_BYTES``; 400 for invalid JSON or a non-object.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes",
                       code="request_too_large")
    if not body.strip():
        raise ApiError(400, "request body is empty; expected a JSON object", code="invalid_json")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise ApiError(400, f"request body is not valid JSON: {exc}",
                       code="invalid_json") from exc
    if not isinstance(value, dict):
        raise ApiError(400, f"request body must be a JSON object, got {_kind(value)}",
                       code="invalid_json")
    return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


# -- field readers (path names the field in errors) ------------------------------------


def _model(body: Mapping[str, Any], key: str = "model") -> str:
    value = body.get(key)
    if value is None:
        raise bad(key, "required (the id of the model to use)", code="missing_model")
    if not isinstance(value, str):
        raise bad(key, f"expected a model id (a string), got {_kind(value)}")
    if not value.strip():
        raise bad(key, "must not be empty")
    return value.strip()


def _opt_bool(body: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(path, f"expected true or false, got {_kind(value)}")
    return value


def _opt_int(body: Mapping[str, Any], key: str, path: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(path, f"expected a whole number, got {_kind(value)}")
    return value


def _opt_number(body: Mapping[str, Any], key: str, path: str, *, low: float,
                high: float | None = None, low_open: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise bad(path, f"expected a number, got {_kind(value)}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        rng = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high else "")
        raise bad(path, f"must be {rng}, got {value!r}")
    return float(value)


def _max_tokens(value: int | None, path: str, *, allow_unlimited: bool = False) -> int | None:
    if value is None:
        return None
    if allow_unlimited and value < 0:  # Ollama: -1 = until the context is full
        return MAX_TOKENS
    if not 1 <= value <= MAX_TOKENS:
        raise bad(path, f"must be between 1 and {MAX_TOKENS}, got {value}")
    return value


def _stop(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad(path, f"expected a string or a list of strings, got {_kind(value)}")
    return tuple(items)


def _seed(value: int | None) -> int | None:
    return None if value is None else value % SEED_MODULUS


def _session(value: object, path: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad(path, f"expected a string, got {_kind(value)}")
    if len(value) > MAX_SESSION_CHARS:
        raise bad(path, f"at most {MAX_SESSION_CHARS} characters")
    return value


def _refuse(body: Mapping[str, Any], key: str, message: str) -> None:
    """``key`` is fine when absent, null, false or empty; anything else is refused."""
    value = body.get(key)
    if value not in (None, False, "", [], {}):
        raise bad(key, message, code="unsupported")


def _params(*, path_of: Mapping[str, str], **values: Any) -> SamplingParams:
    """SamplingParams from the given (non-None) values; its ValueError names the field,
    which ``path_of`` maps back to the API's name for it."""
    kwargs = {k: v for k, v in values.items() if v is not None}
    try:
        return SamplingParams(**kwargs)
    except ValueError as exc:
        field, _, detail = str(exc).partition(": ")
        path = path_of.get(field, field)
        raise bad(path, detail or str(exc)) from exc


def _check_prompt_size(chars: int, path: str) -> None:
    if chars > MAX_PROMPT_CHARS:
        raise ApiError(400, f"{path}: the prompt is {chars} characters; the limit is "
                            f"{MAX_PROMPT_CHARS}", param=path, code="prompt_too_large")


def _request(*, model: str, messages: tuple[ChatMessage, ...] | None = None,
             prompt: str | None = None, params: SamplingParams) -> GenerationRequest:
    try:
        return GenerationRequest(model=model, messages=messages, prompt=prompt, params=params)
    except ValueError as exc:  # our checks ran first; this is a backstop
        field, _, detail = str(exc).partition(": ")
        raise bad(field, detail or str(exc)) from exc


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
                kind = part.get("type") if isinstance(part, dict) else _kind(part)
                raise bad(ppath, f"only text content parts are supported, got {kind!r}",
                          code="unsupported")
            text = part.get("text")
            if not isinstance(text, str):
                raise bad(f"{ppath}.text", f"expected a string, got {_kind(text)}")
            texts.append(text)
        return "\n".join(texts)
    raise bad(path, f"expected a string, got {_kind(value)}")


def _messages(value: object, *, ollama: bool = False) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list):
        raise bad("messages", f"expected a list of messages, got {_kind(value)}")
    if not value:
        raise bad("messages", "must contain at least one message")
    if len(value) > MAX_MESSAGES:
        raise bad("messages", f"at most {MAX_MESSAGES} messages, got {len(value)}")
    out: list[ChatMessage] = []
    chars = 0
    for i, m in enumerate(value):
        path = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(path, f"expected an object, got {_kind(m)}")
        role = m.get("role")
        if role in ("tool", "function"):
            raise bad(f"{path}.role", f"{role!r} messages (tool calling) are not supported",
                      code="unsupported")
        if not isinstance(role, str) or role not in _ROLE_ALIASES:
            raise bad(f"{path}.role", f"expected system, user or assistant, got {role!r}")
        if ollama and m.get("images"):
            raise bad(f"{path}.images", "images are not supported", code="unsupported")
        content = _content(m.get("content"), f"{path}.content", role=_ROLE_ALIASES[role])
        chars += len(content)
        out.append(ChatMessage(role=_ROLE_ALIASES[role], content=content))
    _check_prompt_size(chars, "messages")
    return tuple(out)


# -- OpenAI ----------------------------------------------------------------------------

def _openai_params(body: Mapping[str, Any]) -> SamplingParams:
    n = _opt_int(body, "n", "n")
    if n is not None and n != 1:
        raise ApiError(400, "n must be 1", param="n", code="unsupported")
    _refuse(body, "logprobs", "log probabilities are not supported")
    _refuse(body, "tools", "tool calling is not supported")
    _refuse(body, "functions", "function calling is not supported")
    mct_path = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    max_tokens = _max_tokens(_opt_int(body, mct_path, mct_path), mct_path)
    return _params(
        path_of={"max_tokens": mct_path},
        max_tokens=max_tokens,
        temperature=_opt_number(body, "temperature", "temperature", low=0.0, high=2.0),
        top_p=_opt_number(body, "top_p", "top_p", low=0.0, high=1.0, low_open=True),
        top_k=_opt_int(body, "top_k", "top_k"),  # llama.cpp-server extension
        repeat_penalty=_opt_number(body, "repeat_penalty", "repeat_penalty", low=0.0,
                                   low_open=True),
        stop=_stop(body.get("stop"), "stop") or None,
        seed=_seed(_opt_int(body, "seed", "seed")))


def _openai_stream(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = _opt_bool(body, "stream", "stream", False)
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise bad("stream_options", f"expected an object, got {_kind(opts)}")
    return stream, stream and _opt_bool(opts, "include_usage", "stream_options.include_usage",
                                        False)


def _openai_session(body: Mapping[str, Any], header: str | None) -> str | None:
    user = _session(body.get("user"), "user")
    return _session(header, "X-PeerLLM-Session") or user


def openai_chat(body: Mapping[str, Any], *, session_header: str | None = None) -> Generation:
    """``POST /v1/chat/completions``."""
    model = _model(body)
    messages = _messages(body.get("messages"))
    params = _openai_params(body)
    stream, usage = _openai_stream(body)
    return Generation(request=_request(model=model, messages=messages, params=params),
                      stream=stream, include_usage=usage,
                      session=_openai_session(body, session_header))


def openai_completion(body: Mapping[str, Any], *, session_header: str | None = None
                      ) -> Generation:
    """``POST /v1/completions`` (one prompt; the prompt is fed raw, no chat template)."""
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "expected a string (or a list of exactly one string), got "
                  + ("a list" if isinstance(prompt, list) else _kind(prompt)))
    _check_prompt_size(len(prompt), "prompt")
    _refuse(body, "echo", "echo is not supported")
    _refuse(body, "suffix", "suffix (fill-in-the-middle) is not supported")
    best_of = _opt_int(body, "best_of", "best_of")
    if best_of is not None and best_of != 1:
        raise ApiError(400, "best_of must be 1", param="best_of", code="unsupported")
    params = _openai_params(body)
    stream, usage = _openai_stream(body)
    return Generation(request=_request(model=model, prompt=prompt, params=params),
                      stream=stream, include_usage=usage,
                      session=_openai_session(body, session_header))


def _inputs(value: object, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad(path, "expected a string or a list of strings (token arrays are not "
                        f"supported), got {_kind(value)}")
    if not items:
        raise bad(path, "must not be empty")
    if len(items) > MAX_EMBED_INPUTS:
        raise bad(path, f"at most {MAX_EMBED_INPUTS} inputs, got {len(items)}")
    _check_prompt_size(sum(len(s) for s in items), path)
    return tuple(items)


def openai_embeddings(body: Mapping[str, Any]) -> Embedding:
    """``POST /v1/embeddings``."""
    model = _model(body)
    inputs = _inputs(body.get("input"), "input")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise bad("encoding_format", f"expected 'float' or 'base64', got {fmt!r}")
    if body.get("dimensions") is not None:
        raise bad("dimensions", "choosing the number of dimensions is not supported",
                  code="unsupported")
    return Embedding(model=model, inputs=inputs, base64=fmt == "base64")


# -- Ollama ----------------------------------------------------------------------------


def _ollama_params(body: Mapping[str, Any]) -> SamplingParams:
    opts = body.get("options")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise bad("options", f"expected an object, got {_kind(opts)}")
    _refuse(body, "format", "structured output (format) is not supported")
    _refuse(body, "tools", "tool calling is not supported")
    return _params(
        path_of={"max_tokens": "options.num_predict", "temperature": "options.temperature",
                 "top_p": "options.top_p", "top_k": "options.top_k",
                 "repeat_penalty": "options.repeat_penalty", "stop": "options.stop",
                 "seed": "options.seed"},
        max_tokens=_max_tokens(_opt_int(opts, "num_predict", "options.num_predict"),
                               "options.num_predict", allow_unlimited=True),
        temperature=_opt_number(opts, "temperature", "options.temperature", low=0.0),
        top_p=_opt_number(opts, "top_p", "options.top_p", low=0.0, high=1.0, low_open=True),
        top_k=_opt_int(opts, "top_k", "options.top_k"),
        repeat_penalty=_opt_number(opts, "repeat_penalty", "options.repeat_penalty", low=0.0,
                                   low_open=True),
        stop=_stop(opts.get("stop"), "options.stop") or None,
        seed=_seed(_opt_int(opts, "seed", "options.seed")))


def ollama_chat(body: Mapping[str, Any], *, session_header: str | None = None) -> Generation:
    """``POST /api/chat`` (streams unless ``stream`` is false)."""
    model = _model(body)
    messages = _messages(body.get("messages"), ollama=True)
    params = _ollama_params(body)
    return Generation(request=_request(model=model, messages=messages, params=params),
                      stream=_opt_bool(body, "stream", "stream", True),
                      session=_session(session_header, "X-PeerLLM-Session"))


def ollama_generate(body: Mapping[str, Any], *, session_header: str | None = None
                    ) -> Generation | None:
    """``POST /api/generate``; None for an empty prompt (Ollama's "just load it").

    Without ``raw`` the prompt gets the model's chat template (as one user turn after
    the optional ``system``); with ``raw: true`` it is fed as is.
    """
    model = _model(body)
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise bad("prompt", f"expected a string, got {_kind(prompt)}")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise bad("system", f"expected a string, got {_kind(system)}")
    if body.get("images"):
        raise bad("images", "images are not supported", code="unsupported")
    _refuse(body, "suffix", "suffix (fill-in-the-middle) is not supported")
    raw = _opt_bool(body, "raw", "raw", False)
    params = _ollama_params(body)
    stream = _opt_bool(body, "stream", "stream", True)
    if not prompt:
        return None
    _check_prompt_size(len(prompt) + len(system or ""), "prompt")
    session = _session(session_header, "X-PeerLLM-Session")
    if raw:
        return Generation(request=_request(model=model, prompt=(system or "") + prompt,
                                           params=params), stream=stream, session=session)
    turns = ((ChatMessage(role="system", content=system),) if system else ()) + (
        ChatMessage(role="user", content=prompt),)
    return Generation(request=_request(model=model, messages=turns, params=params),
                      stream=stream, session=session)


def ollama_embed(body: Mapping[str, Any]) -> Embedding:
    """``POST /api/embed``."""
    return Embedding(model=_model(body), inputs=_inputs(body.get("input"), "input"))


def ollama_model_name(body: Mapping[str, Any]) -> str:
    """``/api/show`` names its model with ``model`` (or the older ``name``)."""
    use_name = body.get("model") is None and body.get("name") is not None
    return _model(body, "name" if use_name else "model")


# -- model management ------------------------------------------------------------------


def load_request(body: Mapping[str, Any]) -> LoadRequest:
    """``POST /v1/models/load``: {"model": id, "warmup": bool}."""
    return LoadRequest(model=_model(body), warmup=_opt_bool(body, "warmup", "warmup", False))


def warmup_tokens(body: Mapping[str, Any], default: int) -> int:
    """``POST /v1/models/{id}/warmup``: optional {"tokens": n}."""
    n = _opt_int(body, "tokens", "tokens")
    if n is None:
        return default
    if not 1 <= n <= 1024:
        raise bad("tokens", f"must be between 1 and 1024, got {n}")
    return n
