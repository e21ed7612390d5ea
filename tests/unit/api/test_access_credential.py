"""Where the access guard finds a request's credential: ``Authorization``, else
``x-api-key`` (the anthropic client's) read as a bearer token."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from peerllm.api.access import credential_of


@pytest.mark.parametrize(("headers", "credential"), [
    ({}, None),
    ({"authorization": "Bearer abc"}, "Bearer abc"),
    ({"x-api-key": "abc"}, "Bearer abc"),
    ({"x-api-key": "  abc "}, "Bearer abc"),
    ({"x-api-key": "  "}, None),  # an empty key is no credential, not a malformed one
    ({"authorization": "Bearer abc", "x-api-key": "xyz"}, "Bearer abc"),
    ({"authorization": "Basic Zm9v", "x-api-key": "xyz"}, "Basic Zm9v"),  # refused later
])
def test_authorization_wins_then_x_api_key(headers: dict[str, str],
                                           credential: str | None) -> None:
    assert credential_of(Headers(headers)) == credential
