"""parse_body's one check of a whole body: lone surrogates and non-finite numbers, by path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.api.generation import api_error
from peerllm.api.schemas import ApiError, parse_body
from peerllm.errors import PeerLLMError

clean_text = st.text(max_size=8)  # hypothesis' text has no surrogates
keys = st.text(min_size=1, max_size=8)
values = st.recursive(st.none() | st.booleans() | st.integers() | clean_text
                      | st.floats(allow_nan=False, allow_infinity=False),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(keys, inner, max_size=3), max_leaves=10)
objects = st.dictionaries(keys, values, max_size=4)


@given(objects)
def test_valid_text_and_finite_numbers_pass_unchanged(body: dict[str, Any]) -> None:
    assert parse_body(json.dumps(body).encode()) == body


def paths(value: Any, path: str) -> list[tuple[str, list[Any]]]:
    """(the API path of every place a value sits, the keys that lead there)."""
    found: list[tuple[str, list[Any]]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            found += [(sub, [k]), *((p, [k, *ks]) for p, ks in paths(v, sub))]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += [(f"{path}[{i}]", [i]),
                      *((p, [i, *ks]) for p, ks in paths(v, f"{path}[{i}]"))]
    return found


@given(objects.filter(bool), st.data(), st.sampled_from(['"a\\ud800b"', '"\\udfff"',
                                                          "1e999", "-1e400"]))
def test_one_bad_value_anywhere_is_a_400_naming_its_path(body: dict[str, Any],
                                                         data: st.DataObject, bad: str
                                                         ) -> None:
    where, keys = data.draw(st.sampled_from(paths(body, "")))
    target: Any = body
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = "\0SENTINEL\0"
    text = json.dumps(body).replace('"\\u0000SENTINEL\\u0000"', bad, 1)
    with pytest.raises(ApiError) as err:
        parse_body(text.encode())
    assert err.value.status == 400
    assert err.value.param == where
    problem = "must be finite" if "e" in bad else "contains a lone surrogate"
    assert err.value.message.startswith(f"{where}: {problem}")


def test_a_lone_surrogate_in_a_key_is_refused() -> None:
    with pytest.raises(ApiError, match="a key in messages\\[0\\]: contains a lone"):
        parse_body(b'{"messages": [{"\\ud800": 1}]}')


def test_an_integer_too_long_to_read_is_a_400_without_python_advice() -> None:
    with pytest.raises(ApiError) as err:
        parse_body(b'{"n": ' + b"9" * 5000 + b"}")
    assert err.value.message == "request body is not valid JSON: a number has too many digits"


def test_invalid_json_names_line_and_column_not_the_exception() -> None:
    with pytest.raises(ApiError) as err:
        parse_body(b'{"a": 1,\n "b": }')
    assert err.value.message.startswith("request body is not valid JSON: Expecting value at "
                                        "line 2 column")
    assert "JSONDecodeError" not in err.value.message


def test_an_error_without_an_answer_is_a_generic_500() -> None:
    err = api_error(PeerLLMError("cannot open /home/alice/models/x.gguf"))
    assert (err.status, err.code) == (500, "internal")
    assert "alice" not in err.message and "PeerLLMError" not in err.message
