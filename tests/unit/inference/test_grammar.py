"""JSON schemas to llama.cpp grammars: what compiles, and what is refused before compiling."""

from __future__ import annotations

import json

import pytest

from peerllm.errors import InvalidField
from peerllm.inference.grammar import MAX_REPEAT, MAX_SCHEMA_DEPTH, schema_to_gbnf
from peerllm.inference.request import JSON_OBJECT_SCHEMA


def test_any_object_and_a_schema_compile() -> None:
    assert "root ::= object" in schema_to_gbnf(JSON_OBJECT_SCHEMA)
    grammar = schema_to_gbnf(json.dumps({"type": "object", "required": ["name"],
                                         "properties": {"name": {"type": "string"}}}))
    assert '"\\"name\\""' in grammar


@pytest.mark.parametrize(("schema", "field", "problem"), [
    ("not json", "s", "is not valid JSON"),
    ("[1]", "s", "must be an object"),
    ('{"type": "nonsense"}', "s", "cannot be compiled"),
    (json.dumps({"type": "string", "maxLength": MAX_REPEAT + 1}), "s.maxLength", "at most"),
    (json.dumps({"items": {"type": "array", "minItems": 10**9}}), "s.items.minItems", "at most"),
    (json.dumps({"type": "string", "pattern": "^a{2,9999}$"}), "s.pattern", "repetition"),
    (json.dumps({"$ref": "file:///etc/passwd"}), "s.$ref", "local references"),
    (json.dumps({"type": "string", "pattern": "((a{200}){200}){200}"}), "s.pattern", "expand"),
])
def test_refusals_name_the_schema_path(schema: str, field: str, problem: str) -> None:
    with pytest.raises(InvalidField) as info:
        schema_to_gbnf(schema, field="s")
    assert info.value.field == field and problem in info.value.problem
    assert "Traceback" not in str(info.value)


def test_common_patterns_compile() -> None:
    for pattern in (r"^[a-z]{2,30}@[a-z]{2,30}\.com$", r"^\d{1,3}(\.\d{1,3}){3}$"):
        assert schema_to_gbnf(json.dumps({"type": "string", "pattern": pattern}))


def test_nesting_is_capped() -> None:
    schema: dict[str, object] = {"type": "null"}
    for _ in range(MAX_SCHEMA_DEPTH):
        schema = {"anyOf": [schema]}
    with pytest.raises(InvalidField, match="deeper"):
        schema_to_gbnf(json.dumps(schema))
