"""Readers for the options that shape the output: structured output and logit bias.

OpenAI's ``response_format`` and Ollama's ``format`` both become one JSON schema (JSON
text) that the engine compiles to a llama.cpp grammar; a schema that cannot compile is
refused here, with a 400 naming the body's field, before any peer sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ..errors import InvalidField
from ..inference.grammar import schema_to_gbnf
from ..inference.request import JSON_OBJECT_SCHEMA
from ..wire.limits import MAX_JSON_SCHEMA_CHARS
from . import _readers as r

OPENAI_SCHEMA_PATH: Final = "response_format.json_schema.schema"
OLLAMA_SCHEMA_PATH: Final = "format"


def _schema_text(schema: dict[str, Any], path: str) -> str:
    """``schema`` as compact JSON text, checked to compile."""
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_JSON_SCHEMA_CHARS:  # before the converter spends time on it
        raise r.bad(path, f"the schema is {len(text)} characters as JSON; the limit is "
                          f"{MAX_JSON_SCHEMA_CHARS}", code="invalid_schema")
    try:
        schema_to_gbnf(text, field=path)
    except InvalidField as exc:
        raise r.bad(exc.field, exc.problem, code="invalid_schema") from exc
    return text


def openai_response_format(body: Mapping[str, Any]) -> str | None:
    """The JSON schema asked for by ``response_format``; None for free text."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise r.bad("response_format", f"expected an object, got {r.kind(fmt)}")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_SCHEMA
    if kind != "json_schema":
        raise r.bad("response_format.type", "expected 'text', 'json_object' or "
                                            f"'json_schema', got {kind!r}")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise r.bad("response_format.json_schema", f"expected an object, got {r.kind(spec)}")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise r.bad("response_format.json_schema.name", f"expected a string, got {r.kind(name)}")
    # strict: true or false both get the grammar (stricter than "best effort" is harmless).
    r.opt_bool(spec, "strict", "response_format.json_schema.strict", False)
    schema = spec.get("schema")
    if schema is None:  # OpenAI: no schema means any JSON object
        return JSON_OBJECT_SCHEMA
    if not isinstance(schema, dict):
        raise r.bad(OPENAI_SCHEMA_PATH, f"expected a JSON schema object, got {r.kind(schema)}")
    return _schema_text(schema, OPENAI_SCHEMA_PATH)


def ollama_format(body: Mapping[str, Any]) -> str | None:
    """The JSON schema asked for by Ollama's ``format`` ("json" or a schema); None for none."""
    fmt = body.get("format")
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return JSON_OBJECT_SCHEMA
    if not isinstance(fmt, dict):
        raise r.bad(OLLAMA_SCHEMA_PATH, "expected \"json\" or a JSON schema object, got "
                    + (repr(fmt) if isinstance(fmt, str) else r.kind(fmt)))
    return _schema_text(fmt, OLLAMA_SCHEMA_PATH)


def logit_bias(body: Mapping[str, Any]) -> tuple[tuple[int, float], ...] | None:
    """OpenAI ``logit_bias``: {"<token id>": bias}; ranges are SamplingParams' to check."""
    value = body.get("logit_bias")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise r.bad("logit_bias", f"expected an object of token id to bias, got {r.kind(value)}")
    pairs: list[tuple[int, float]] = []
    for key in value:
        if not key.isascii() or not key.isdigit():
            raise r.bad("logit_bias", f"keys must be token ids (whole numbers), got {key!r}")
        bias = r.opt_number(value, key, f"logit_bias.{key}")
        if bias is None:
            raise r.bad(f"logit_bias.{key}", "expected a number, got null")
        pairs.append((int(key), bias))
    return tuple(pairs)


def refuse_unless(opts: Mapping[str, Any], key: str, path: str, ours: float,
                  what: str) -> None:
    """``key`` may be absent or equal to what the engine does (``ours``); else a 400."""
    value = r.opt_number(opts, key, path)
    if value is not None and value != ours:
        raise r.bad(path, f"{what} is not supported (this server samples with {ours:g})",
                    code="unsupported")
