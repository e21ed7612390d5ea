"""JSON schemas to llama.cpp grammars (GBNF), refusing schemas that cannot or should not compile.

Both the API (to answer 400 naming the field) and the serving engine (a peer's schema is
checked again before it reaches llama.cpp) call ``schema_to_gbnf``. The converter is
llama-cpp-python's pure-Python ``llama_grammar`` module, imported lazily like the rest of
llama_cpp. It expands repetitions (``maxLength: n`` becomes n nested rules), so the
counts a schema may ask for are capped *before* converting, and the grammar size after.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from ..errors import InvalidField

MAX_REPEAT: Final = 256
"""Largest repetition count a schema may ask for (maxLength, minItems, a pattern's {n})."""
MAX_PATTERN_EXPANSION: Final = 4096
"""Largest product of a pattern's repetition counts: nested repetitions multiply when the
converter writes them out, ``((a{256}){256}){256}`` would be 16 M characters."""
MAX_GRAMMAR_CHARS: Final = 256 * 1024
"""Largest grammar a schema may compile to."""
MAX_SCHEMA_DEPTH: Final = 32
_COUNT_KEYS: Final = frozenset({"minLength", "maxLength", "minItems", "maxItems",
                                "minProperties", "maxProperties"})
_QUANTIFIER: Final = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def schema_to_gbnf(schema: str, *, field: str = "json_schema") -> str:
    """The GBNF grammar for JSON text matching ``schema`` (a JSON schema as JSON text).

    Raises:
        InvalidField: ``field`` is not a JSON object, nests deeper than MAX_SCHEMA_DEPTH,
            asks for more than MAX_REPEAT repetitions, uses what the converter does not
            support (a remote ``$ref``, an unknown type, ...), or compiles to more than
            MAX_GRAMMAR_CHARS.
    """
    try:
        value = json.loads(schema)
    except ValueError as exc:
        raise InvalidField(field, "is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidField(field, "a JSON schema must be an object")
    _check(value, field, depth=0)
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar: str = json_schema_to_gbnf(schema)
    # The converter reports unsupported schemas with asserts, KeyErrors, ValueErrors...;
    # its messages quote the schema, never our internals.
    except (AssertionError, KeyError, ValueError, TypeError, IndexError,
            RecursionError) as exc:
        detail = str(exc)[:200] if isinstance(exc, AssertionError | ValueError) else ""
        raise InvalidField(field, "cannot be compiled to a grammar"
                           + (f" ({detail})" if detail else "")) from exc
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidField(field, f"compiles to a grammar of {len(grammar)} characters; the "
                                  f"limit is {MAX_GRAMMAR_CHARS} (simplify the schema)")
    return grammar


def _check_pattern(pattern: str, path: str) -> None:
    product = 1
    for match in _QUANTIFIER.finditer(pattern):
        counts = [int(g) for g in match.groups() if g]
        if any(c > MAX_REPEAT for c in counts):
            raise InvalidField(path, f"repetition {match.group(0)} is over {MAX_REPEAT}")
        product *= max(1, *counts)
    if product > MAX_PATTERN_EXPANSION:
        raise InvalidField(path, "the repetitions together expand to more than "
                                 f"{MAX_PATTERN_EXPANSION} (simplify the pattern)")


def _check(node: Any, path: str, *, depth: int) -> None:
    """Refuse what would make the converter blow up before it runs."""
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidField(path, f"nests deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check(item, f"{path}[{i}]", depth=depth + 1)
        return
    if not isinstance(node, dict):
        return
    for key, item in node.items():
        where = f"{path}.{key}"
        if key in _COUNT_KEYS and isinstance(item, int) and item > MAX_REPEAT:
            raise InvalidField(where, f"at most {MAX_REPEAT} is supported, got {item}")
        if key == "pattern" and isinstance(item, str):
            _check_pattern(item, where)
        if key == "$ref" and isinstance(item, str) and not item.startswith("#"):
            raise InvalidField(where, "only local references (#/...) are supported")
        _check(item, where, depth=depth + 1)
