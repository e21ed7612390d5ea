"""Parsing and validating API request bodies (OpenAI and Ollama shapes) into engine requests.

Pure: bytes or decoded JSON in, frozen values out, :class:`ApiError` (a 4xx naming the
offending field) for anything malformed. Unknown keys are ignored, as both upstream APIs
do; keys we know but cannot honour (``n`` > 1, tools, images, ...) are refused rather than
silently dropped, because they change what the caller gets back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..inference.engine import ChatMessage, GenerationRequest, SamplingParams
from ..inference.request import MIN_P, REPEAT_LAST_N
from ..wire.limits import MAX_TOKENS
from . import _readers as r
from . import _structured as structured
from ._keep_alive import keep_alive as keep_alive
from ._readers import MAX_BODY_BYTES as MAX_BODY_BYTES
from ._readers import MAX_EMBED_INPUTS as MAX_EMBED_INPUTS
from ._readers import ApiError as ApiError
from ._readers import Json as Json
from ._readers import parse_body as parse_body

# The request limits (messages, prompt size, sampling ranges, stop strings) are checked
# by GenerationRequest and SamplingParams with the infer protocol's numbers (wire.limits),
# so whatever parses here can also be sent to a peer.


@dataclass(frozen=True, kw_only=True)
class Generation:
    """A parsed chat or completion request."""

    request: GenerationRequest
    stream: bool
    include_usage: bool = False  # OpenAI stream_options.include_usage
    session: str | None = None  # sticky-routing key (OpenAI ``user`` or X-PeerLLM-Session)
    keep_alive_s: float | None = None  # Ollama keep_alive (math.inf: forever); None: not given


@dataclass(frozen=True, kw_only=True)
class Embedding:
    model: str
    inputs: tuple[str, ...]
    base64: bool = False  # OpenAI encoding_format "base64": little-endian float32
    keep_alive_s: float | None = None  # Ollama keep_alive, as in Generation


@dataclass(frozen=True, kw_only=True)
class LoadRequest:
    model: str
    warmup: bool


# -- OpenAI ----------------------------------------------------------------------------


def _openai_params(body: Mapping[str, Any]) -> SamplingParams:
    n = r.opt_int(body, "n", "n")
    if n is not None and n != 1:
        raise ApiError(400, "n must be 1", param="n", code="unsupported")
    r.refuse(body, "logprobs", "log probabilities are not supported")
    r.refuse(body, "tools", "tool calling is not supported")
    r.refuse(body, "functions", "function calling is not supported")
    r.refuse(body, "top_logprobs", "log probabilities are not supported")
    r.refuse(body, "audio", "audio output is not supported")
    r.refuse(body, "web_search_options", "web search is not supported")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise ApiError(400, "modalities: only [\"text\"] is supported", param="modalities",
                       code="unsupported")
    tool_choice = body.get("tool_choice")
    if tool_choice not in (None, "none", "auto"):  # without tools, these two mean "no tool"
        raise ApiError(400, "tool_choice: tool calling is not supported", param="tool_choice",
                       code="unsupported")
    mct_path = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    temperature = r.temperature(body, high=2.0)  # OpenAI's range
    return r.sampling(
        path_of={"max_tokens": mct_path, "json_schema": structured.OPENAI_SCHEMA_PATH},
        max_tokens=r.opt_int(body, mct_path, mct_path),
        temperature=temperature,
        top_p=r.opt_number(body, "top_p", "top_p"),
        top_k=r.opt_int(body, "top_k", "top_k"),  # llama.cpp-server extension
        repeat_penalty=r.opt_number(body, "repeat_penalty", "repeat_penalty"),
        stop=r.stop_strings(body.get("stop"), "stop") or None,
        seed=r.fold_seed(r.opt_int(body, "seed", "seed")),
        presence_penalty=r.opt_number(body, "presence_penalty", "presence_penalty"),
        frequency_penalty=r.opt_number(body, "frequency_penalty", "frequency_penalty"),
        logit_bias=structured.logit_bias(body),
        json_schema=structured.openai_response_format(body))


def _openai_stream(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = r.opt_bool(body, "stream", "stream", False)
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise r.bad("stream_options", f"expected an object, got {r.kind(opts)}")
    return stream, stream and r.opt_bool(opts, "include_usage",
                                         "stream_options.include_usage", False)


def _openai_session(body: Mapping[str, Any], header: str | None) -> str | None:
    user = r.session(body.get("user"), "user")
    return r.session(header, "X-PeerLLM-Session") or user


def openai_chat(body: Mapping[str, Any], *, session_header: str | None = None) -> Generation:
    """``POST /v1/chat/completions``."""
    model = r.model_id(body)
    messages = r.messages(body.get("messages"))
    params = _openai_params(body)
    stream, usage = _openai_stream(body)
    request = r.generation_request(model=model, messages=messages, params=params)
    return Generation(request=request, stream=stream, include_usage=usage,
                      session=_openai_session(body, session_header))


def openai_completion(body: Mapping[str, Any], *, session_header: str | None = None
                      ) -> Generation:
    """``POST /v1/completions`` (one prompt; the prompt is fed raw, no chat template)."""
    model = r.model_id(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise r.bad("prompt", "expected a string (or a list of exactly one string), got "
                    + ("a list" if isinstance(prompt, list) else r.kind(prompt)))
    r.refuse(body, "echo", "echo is not supported")
    r.refuse(body, "suffix", "suffix (fill-in-the-middle) is not supported")
    best_of = r.opt_int(body, "best_of", "best_of")
    if best_of is not None and best_of != 1:
        raise ApiError(400, "best_of must be 1", param="best_of", code="unsupported")
    params = _openai_params(body)
    stream, usage = _openai_stream(body)
    request = r.generation_request(model=model, prompt=prompt, params=params)
    return Generation(request=request, stream=stream, include_usage=usage,
                      session=_openai_session(body, session_header))


def openai_embeddings(body: Mapping[str, Any]) -> Embedding:
    """``POST /v1/embeddings``."""
    model = r.model_id(body)
    inputs = r.inputs(body.get("input"), "input")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise r.bad("encoding_format", f"expected 'float' or 'base64', got {fmt!r}")
    if body.get("dimensions") is not None:
        raise r.bad("dimensions", "choosing the number of dimensions is not supported",
                    code="unsupported")
    return Embedding(model=model, inputs=inputs, base64=fmt == "base64")


# -- Ollama ----------------------------------------------------------------------------


def _num_predict(value: int | None) -> int | None:
    return MAX_TOKENS if value is not None and value < 0 else value  # -1: until context is full


def _ollama_params(body: Mapping[str, Any]) -> SamplingParams:
    opts = body.get("options")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise r.bad("options", f"expected an object, got {r.kind(opts)}")
    r.refuse(body, "tools", "tool calling is not supported")
    r.refuse(body, "think", "thinking is not supported by these models")
    # Options that change sampling and that the engine does not vary: refused unless
    # they ask for what it does anyway.
    structured.refuse_unless(opts, "mirostat", "options.mirostat", 0, "mirostat sampling")
    structured.refuse_unless(opts, "typical_p", "options.typical_p", 1, "typical sampling")
    structured.refuse_unless(opts, "min_p", "options.min_p", MIN_P, "min_p")
    structured.refuse_unless(opts, "repeat_last_n", "options.repeat_last_n",
                             REPEAT_LAST_N, "repeat_last_n")
    return r.sampling(
        path_of={"max_tokens": "options.num_predict", "temperature": "options.temperature",
                 "top_p": "options.top_p", "top_k": "options.top_k",
                 "repeat_penalty": "options.repeat_penalty", "stop": "options.stop",
                 "seed": "options.seed", "presence_penalty": "options.presence_penalty",
                 "frequency_penalty": "options.frequency_penalty",
                 "json_schema": structured.OLLAMA_SCHEMA_PATH},
        max_tokens=_num_predict(r.opt_int(opts, "num_predict", "options.num_predict")),
        temperature=r.opt_number(opts, "temperature", "options.temperature"),
        top_p=r.opt_number(opts, "top_p", "options.top_p"),
        top_k=r.opt_int(opts, "top_k", "options.top_k"),
        repeat_penalty=r.opt_number(opts, "repeat_penalty", "options.repeat_penalty"),
        stop=r.stop_strings(opts.get("stop"), "options.stop") or None,
        seed=r.fold_seed(r.opt_int(opts, "seed", "options.seed")),
        presence_penalty=r.opt_number(opts, "presence_penalty", "options.presence_penalty"),
        frequency_penalty=r.opt_number(opts, "frequency_penalty", "options.frequency_penalty"),
        json_schema=structured.ollama_format(body))


def ollama_chat(body: Mapping[str, Any], *, session_header: str | None = None) -> Generation:
    """``POST /api/chat`` (streams unless ``stream`` is false)."""
    model = r.model_id(body)
    messages = r.messages(body.get("messages"), ollama=True)
    params = _ollama_params(body)
    request = r.generation_request(model=model, messages=messages, params=params)
    return Generation(request=request, stream=r.opt_bool(body, "stream", "stream", True),
                      session=r.session(session_header, "X-PeerLLM-Session"),
                      keep_alive_s=keep_alive(body))


def ollama_generate(body: Mapping[str, Any], *, session_header: str | None = None
                    ) -> Generation | None:
    """``POST /api/generate``; None for an empty prompt (Ollama's "just load it").

    Without ``raw`` the prompt gets the model's chat template (as one user turn after
    the optional ``system``); with ``raw: true`` it is fed as is.
    """
    model = r.model_id(body)
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise r.bad("prompt", f"expected a string, got {r.kind(prompt)}")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise r.bad("system", f"expected a string, got {r.kind(system)}")
    if body.get("images"):
        raise r.bad("images", "images are not supported", code="unsupported")
    r.refuse(body, "suffix", "suffix (fill-in-the-middle) is not supported")
    r.refuse(body, "context", "context (the deprecated conversation state) is not supported; "
                              "use /api/chat")
    r.refuse(body, "template", "overriding the prompt template is not supported")
    raw = r.opt_bool(body, "raw", "raw", False)
    params = _ollama_params(body)
    stream = r.opt_bool(body, "stream", "stream", True)
    if not prompt:
        return None
    session = r.session(session_header, "X-PeerLLM-Session")
    if raw:
        request = r.generation_request(model=model, prompt=(system or "") + prompt,
                                       params=params)
        return Generation(request=request, stream=stream, session=session,
                          keep_alive_s=keep_alive(body))
    turns = ((ChatMessage(role="system", content=system),) if system else ()) + (
        ChatMessage(role="user", content=prompt),)
    # Name the body's fields, not the turns we made of them.
    path_of = {"messages": "prompt", f"messages[{len(turns) - 1}].content": "prompt",
               "messages[0].content": "system" if system else "prompt"}
    request = r.generation_request(model=model, messages=turns, params=params, path_of=path_of)
    return Generation(request=request, stream=stream, session=session,
                      keep_alive_s=keep_alive(body))


def ollama_embed(body: Mapping[str, Any]) -> Embedding:
    """``POST /api/embed``."""
    return Embedding(model=r.model_id(body), inputs=r.inputs(body.get("input"), "input"),
                     keep_alive_s=keep_alive(body))


def ollama_embeddings(body: Mapping[str, Any]) -> Embedding:
    """The legacy ``POST /api/embeddings``: one ``prompt`` string (``input`` is /api/embed's)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise r.bad("prompt", f"expected a string, got {r.kind(prompt)}")
    return Embedding(model=r.model_id(body), inputs=r.inputs(prompt, "prompt"))


def ollama_model_name(body: Mapping[str, Any]) -> str:
    """``/api/show`` names its model with ``model`` (or the older ``name``)."""
    use_name = body.get("model") is None and body.get("name") is not None
    return r.model_id(body, "name" if use_name else "model")


# -- model management ------------------------------------------------------------------


def load_request(body: Mapping[str, Any]) -> LoadRequest:
    """``POST /v1/models/load``: {"model": id, "warmup": bool}."""
    return LoadRequest(model=r.model_id(body),
                       warmup=r.opt_bool(body, "warmup", "warmup", False))


def warmup_tokens(body: Mapping[str, Any], default: int) -> int:
    """``POST /v1/models/{id}/warmup``: optional {"tokens": n}."""
    n = r.opt_int(body, "tokens", "tokens")
    if n is None:
        return default
    if not 1 <= n <= 1024:
        raise r.bad("tokens", f"must be between 1 and 1024, got {n}")
    return n
