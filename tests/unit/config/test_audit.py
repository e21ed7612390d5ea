"""Section ``audit``: defaults (the documented 10 MiB x 5) and strict values."""

from __future__ import annotations

from typing import Any

import pytest

from peerllm.config import AuditConfig, NodeConfig, config_from_mapping
from peerllm.errors import ConfigError


def test_defaults_bound_the_disk_use() -> None:
    cfg = NodeConfig().audit
    assert cfg == AuditConfig(enabled=True, max_bytes=10 * 1024**2, backups=5,
                              lines_per_s=50.0)
    assert config_from_mapping({"audit": {"enabled": False}}).audit.enabled is False


@pytest.mark.parametrize(("key", "value"), [
    ("enabled", "yes"), ("max_bytes", 100), ("max_bytes", 1.5), ("backups", 0),
    ("backups", True), ("lines_per_s", 0), ("lines_per_s", float("inf")),
])
def test_bad_values_name_the_setting(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"audit": {key: value}})
    assert err.value.key == f"audit.{key}"
