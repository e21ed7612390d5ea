"""Reading an OpenAI Responses request (``POST /v1/responses``) into a Generation.

Text in, text out: ``input`` is a string (one user turn) or a list of message items
whose content is a string or a list of ``input_text`` parts (``output_text`` for the
assistant's earlier answers); ``instructions`` becomes the system turn. We keep no
responses, so nothing can refer to an earlier one (``previous_response_id``,
``conversation``); those, tools, reasoning and structured output (``text.format`` other
than text) change the answer and are refused with a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..inference.engine import ChatMessage
from . import _readers as r
from .schemas import Generation

MAX_TEMPERATURE: Final = 2.0  # OpenAI's range
_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system",
                 "developer": "system"}
_TEXT_PARTS: Final = ("input_text", "output_text")
_REFUSED: Final = {
    "tools": "tool calling is not supported",
    "previous_response_id": "responses are not stored, so none can be continued",
    "conversation": "conversations are not stored",
    "prompt": "stored prompt templates are not supported",
    "reasoning": "reasoning options are not supported",
    "include": "extra output (include) is not supported",
    "top_logprobs": "log probabilities are not supported",
    "background": "background responses are not supported",
    "max_tool_calls": "tool calling is not supported",
}


def _content(value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise r.bad(path, f"expected a string or a list of input_text parts, got "
                          f"{r.kind(value)}")
    texts: list[str] = []
    for j, part in enumerate(value):
        ppath = f"{path}[{j}]"
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
            what = part.get("type") if isinstance(part, dict) else r.kind(part)
            raise r.bad(ppath, f"only input_text parts are supported, got {what!r}",
                        code="unsupported")
        text = part.get("text")
        if not isinstance(text, str):
            raise r.bad(f"{ppath}.text", f"expected a string, got {r.kind(text)}")
        texts.append(text)
    return "\n".join(texts)


def _items(value: object) -> list[tuple[ChatMessage, str]]:
    """The turns of ``input``, each with the path that names it in errors."""
    if isinstance(value, str):
        return [(ChatMessage(role="user", content=value), "input")]
    if not isinstance(value, list) or not value:
        raise r.bad("input", "expected a string or a non-empty list of messages, got "
                    + ("an empty list" if isinstance(value, list) else r.kind(value)))
    turns: list[tuple[ChatMessage, str]] = []
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise r.bad(path, f"expected a message object, got {r.kind(item)}")
        if item.get("type", "message") != "message":
            raise r.bad(f"{path}.type", f"only message items are supported, got "
                                        f"{item.get('type')!r}", code="unsupported")
        role = item.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise r.bad(f"{path}.role",
                        f"expected user, assistant, system or developer, got {role!r}")
        content = _content(item.get("content"), f"{path}.content")
        turns.append((ChatMessage(role=_ROLES[role], content=content), f"{path}.content"))
    return turns


def _text_format(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise r.bad("text", f"expected an object, got {r.kind(value)}")
    fmt = value.get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        what = fmt.get("type") if isinstance(fmt, dict) else r.kind(fmt)
        raise r.bad("text.format", f"only the 'text' format is supported, got {what!r}",
                    code="unsupported")
    if value.get("verbosity") is not None:
        raise r.bad("text.verbosity", "verbosity is not supported", code="unsupported")


def _tool_choice(value: object) -> None:
    if value not in (None, "none", "auto"):  # without tools both mean "answer in text"
        raise r.bad("tool_choice", "tool calling is not supported", code="unsupported")


def responses_request(body: Mapping[str, Any], *, session_header: str | None = None
                      ) -> Generation:
    """``POST /v1/responses``.

    Raises:
        ApiError: 400 naming the field that is missing, malformed or unsupported.
    """
    model = r.model_id(body)
    r.refuse_all(body, _REFUSED)
    _text_format(body.get("text"))
    _tool_choice(body.get("tool_choice"))
    if body.get("truncation") not in (None, "disabled"):
        raise r.bad("truncation", "only 'disabled' is supported (an over-long input is "
                                  "refused, not cut)", code="unsupported")
    temperature = r.temperature(body, high=MAX_TEMPERATURE)
    params = r.sampling(path_of={"max_tokens": "max_output_tokens"},
                        max_tokens=r.opt_int(body, "max_output_tokens", "max_output_tokens"),
                        temperature=temperature, top_p=r.opt_number(body, "top_p", "top_p"))
    turns = _items(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise r.bad("instructions", f"expected a string, got {r.kind(instructions)}")
    if instructions:
        turns.insert(0, (ChatMessage(role="system", content=instructions), "instructions"))
    path_of = {f"messages[{k}].content": path for k, (_, path) in enumerate(turns)}
    path_of["messages"] = "input"
    request = r.generation_request(model=model, messages=tuple(m for m, _ in turns),
                                   params=params, path_of=path_of)
    stream = r.opt_bool(body, "stream", "stream", False)
    user = r.session(body.get("user"), "user") or r.session(
        body.get("safety_identifier"), "safety_identifier")
    return Generation(request=request, stream=stream,
                      session=r.session(session_header, "X-PeerLLM-Session") or user)
