"""Reading an Anthropic Messages request (``POST /v1/messages``) into a Generation.

Text only: ``system`` and the turns' content are strings or lists of ``text`` blocks;
any other block (images, documents, tool use and results, thinking) and every field that
would change the answer but that we cannot honour (tools, extended thinking, structured
output) is a 400 naming it. A last ``assistant`` turn is a prefill, as Anthropic defines
it: the answer continues that text and does not repeat it (``resume_text``, which also
survives a failover to another replica).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..errors import InvalidField
from ..inference.engine import ChatMessage, GenerationRequest
from . import _readers as r
from .schemas import Generation

MAX_TEMPERATURE: Final = 1.0  # Anthropic's range is 0..1
_ROLES: Final = ("user", "assistant")
# Fields that change the answer; we refuse them rather than answer as if they were absent.
_REFUSED: Final = {
    "tools": "tool use is not supported",
    "tool_choice": "tool use is not supported",
    "mcp_servers": "MCP servers are not supported",
    "container": "containers (code execution) are not supported",
    "output_format": "structured output is not supported",
    "output_config": "output configuration (structured output, effort) is not supported",
    "context_management": "context management is not supported",
}


def _system(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts: list[str] = []
        for i, block in enumerate(value):
            path = f"system[{i}]"
            if not isinstance(block, dict) or block.get("type") != "text":
                what = block.get("type") if isinstance(block, dict) else r.kind(block)
                raise r.bad(path, f"only text blocks are supported, got {what!r}",
                            code="unsupported")
            text = block.get("text")
            if not isinstance(text, str):
                raise r.bad(f"{path}.text", f"expected a string, got {r.kind(text)}")
            texts.append(text)
        return "\n".join(texts)
    raise r.bad("system", f"expected a string or a list of text blocks, got {r.kind(value)}")


def _turns(value: object) -> list[dict[str, Any]]:
    """The turns, with roles checked here: ``_readers.messages`` would take system ones."""
    if not isinstance(value, list) or not value:
        raise r.bad("messages", "expected a non-empty list of messages, got "
                    + ("an empty list" if isinstance(value, list) else r.kind(value)))
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise r.bad(f"messages[{i}]", f"expected an object, got {r.kind(m)}")
        if m.get("role") not in _ROLES:
            raise r.bad(f"messages[{i}].role",
                        f"expected 'user' or 'assistant', got {m.get('role')!r} "
                        "(the system prompt is the top-level 'system' field)")
    return value


def _thinking(value: object) -> None:
    if value is None or (isinstance(value, dict) and value.get("type") == "disabled"):
        return
    raise r.bad("thinking", "extended thinking is not supported", code="unsupported")


def messages_request(body: Mapping[str, Any], *, session_header: str | None = None
                     ) -> Generation:
    """``POST /v1/messages``.

    Raises:
        ApiError: 400 naming the field that is missing, malformed or unsupported.
    """
    model = r.model_id(body)
    r.refuse_all(body, _REFUSED)
    _thinking(body.get("thinking"))
    max_tokens = r.opt_int(body, "max_tokens", "max_tokens")
    if max_tokens is None:
        raise r.bad("max_tokens", "required (the most tokens to generate)")
    temperature = r.temperature(body, high=MAX_TEMPERATURE)
    params = r.sampling(
        path_of={"stop": "stop_sequences"}, max_tokens=max_tokens, temperature=temperature,
        top_p=r.opt_number(body, "top_p", "top_p"), top_k=r.opt_int(body, "top_k", "top_k"),
        stop=r.stop_strings(body.get("stop_sequences"), "stop_sequences") or None)
    turns = _turns(body.get("messages"))
    system = _system(body.get("system"))
    chat = r.messages(turns)
    prefill = ""
    if chat[-1].role == "assistant":
        prefill, chat = chat[-1].content, chat[:-1]
        if not chat:
            raise r.bad("messages", "a prefill (a last assistant turn) needs a user turn "
                                    "before it")
    if system:
        chat = (ChatMessage(role="system", content=system), *chat)
    offset = 1 if system else 0
    path_of = {f"messages[{i + offset}].content": f"messages[{i}].content"
               for i in range(len(turns))}
    if system:
        path_of["messages[0].content"] = "system"
    request = r.generation_request(model=model, messages=chat, params=params, path_of=path_of)
    if prefill:
        request = _with_prefill(request, prefill, len(turns) - 1)
    stream = r.opt_bool(body, "stream", "stream", False)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise r.bad("metadata", f"expected an object, got {r.kind(metadata)}")
    user = r.session((metadata or {}).get("user_id"), "metadata.user_id")
    return Generation(request=request, stream=stream,
                      session=r.session(session_header, "X-PeerLLM-Session") or user)


def _with_prefill(request: GenerationRequest, prefill: str, index: int
                  ) -> GenerationRequest:
    try:
        return GenerationRequest(model=request.model, messages=request.messages,
                                   params=request.params, resume_text=prefill)
    except InvalidField as exc:  # the prompt limits count the prefill too
        raise r.bad(f"messages[{index}].content", exc.problem,
                    code="prompt_too_large" if exc.too_large else "invalid_value") from exc

