"""A non-loopback API without auth is refused, or warned about when explicitly allowed."""

from __future__ import annotations

import logging

import pytest

from peerllm.api.server import check_exposure
from peerllm.config import ApiConfig, AuthConfig, NodeConfig
from peerllm.errors import ConfigError


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_auth(host: str) -> None:
    cfg = NodeConfig(api=ApiConfig(host=host))
    assert not cfg.api_exposed_without_auth
    check_exposure(cfg)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "node.lan"])
def test_an_exposed_api_without_auth_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError, match="--require-auth") as info:
        check_exposure(NodeConfig(api=ApiConfig(host=host)))
    assert info.value.key == "api.host" and "--insecure-no-auth" in info.value.message
    check_exposure(NodeConfig(api=ApiConfig(host=host), auth=AuthConfig(required=True)))


def test_insecure_no_auth_starts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = NodeConfig(api=ApiConfig(host="0.0.0.0"), auth=AuthConfig(insecure_no_auth=True))
    with caplog.at_level(logging.WARNING, logger="peerllm.api.server"):
        check_exposure(cfg)
    assert "WITHOUT authentication" in caplog.text and cfg.api_exposed_without_auth
