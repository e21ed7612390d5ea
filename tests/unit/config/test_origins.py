"""api.cors_origins and api.allowed_hosts: written loosely, stored in the one canonical form
the API compares Origin and Host headers in."""

from __future__ import annotations

from typing import Any

import pytest

from peerllm.config import ApiConfig, config_from_mapping
from peerllm.config.origins import canonical_origin, split_host_port
from peerllm.errors import ConfigError


def api(**settings: Any) -> ApiConfig:
    return config_from_mapping({"api": settings}).api


@pytest.mark.parametrize(("written", "stored"), [
    ("http://localhost:3000", "http://localhost:3000"),
    ("HTTP://LocalHost:3000/", "http://localhost:3000"),
    ("http://localhost:80", "http://localhost"),
    ("https://app.example:443", "https://app.example"),
    ("https://app.example:80", "https://app.example:80"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("http://[0:0::1]", "http://[::1]"),
    ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
    ("chrome-extension://abcdefghijklmnop", "chrome-extension://abcdefghijklmnop"),
    ("*", "*"),
])
def test_origins_are_stored_canonical(written: str, stored: str) -> None:
    assert api(cors_origins=[written]).cors_origins == (stored,)


def test_duplicate_origins_collapse_in_order() -> None:
    origins = ["http://b.example", "http://a.example", "HTTP://B.example:80"]
    assert api(cors_origins=origins).cors_origins == ("http://b.example", "http://a.example")


@pytest.mark.parametrize(("written", "why"), [
    ("localhost:3000", "starts with a scheme"),
    ("http://", "needs a host"),
    ("http://app.example/path", "without a path"),
    ("http://user@app.example", "without a path"),
    ("http://app.example:99999", "port '99999'"),
    ("http://::1", "brackets"),
    ("http://exa mple.com", "without a path"),
    ("null", "starts with a scheme"),
])
def test_a_bad_origin_says_what_an_origin_is(written: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        api(cors_origins=[written])
    assert info.value.key == "api.cors_origins"
    assert why in info.value.message
    assert "scheme://host[:port]" in info.value.message


def test_origins_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="expected a list of strings"):
        api(cors_origins="http://localhost:3000")


@pytest.mark.parametrize(("written", "stored"), [
    ("node-1.lan", "node-1.lan"), ("Node-1.LAN.", "node-1.lan"), ("[::1]", "::1"),
    ("fe80::1", "fe80::1"), ("192.0.2.7", "192.0.2.7"), ("*", "*"), ("my_box", "my_box"),
])
def test_allowed_hosts_are_stored_canonical(written: str, stored: str) -> None:
    assert api(allowed_hosts=[written]).allowed_hosts == (stored,)


@pytest.mark.parametrize(("written", "why"), [
    ("node-1.lan:7471", "without a port"),
    ("http://node-1.lan", "is not a host name"),
    ("-bad-.lan", "is not a host name"),
    ("a..b", "is not a host name"),
])
def test_a_bad_allowed_host_is_refused(written: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        api(allowed_hosts=[written])
    assert info.value.key == "api.allowed_hosts"
    assert why in info.value.message


@pytest.mark.parametrize(("header", "parsed"), [
    ("127.0.0.1:7471", ("127.0.0.1", 7471)), ("LOCALHOST", ("localhost", None)),
    ("[::1]:7471", ("::1", 7471)), ("[::1]", ("::1", None)), ("evil.example.:80",
                                                                ("evil.example", 80)),
])
def test_host_headers_parse_to_the_canonical_host(header: str, parsed: tuple[str, int | None]
                                                  ) -> None:
    assert split_host_port(header) == parsed


@pytest.mark.parametrize("header", ["", ":80", "[::1", "[::1]x", "[127.0.0.1]", "a:b:c",
                                    "host:", "host:http", "ex ample"])
def test_malformed_host_headers_do_not_parse(header: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):  # any message: each names its problem
        split_host_port(header)


def test_a_browser_origin_matches_its_configured_spelling() -> None:
    configured = api(cors_origins=["HTTP://LocalHost:80/"]).cors_origins
    assert canonical_origin("http://localhost") in configured
