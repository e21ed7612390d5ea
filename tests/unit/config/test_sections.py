"""Config sections: defaults, strict validation of every value, unknown keys, API addresses."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from peerllm.config import (
    ApiConfig,
    DiscoveryConfig,
    NodeConfig,
    NodeIdentityConfig,
    P2PConfig,
    config_from_mapping,
    parse_api_address,
)
from peerllm.errors import ConfigError
from tests.helpers import REPO

EXAMPLE = REPO / "configs" / "node.example.yaml"
PEER = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
KEY = "0123456789abcdef" * 4


def error_for(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    return info.value


# --------------------------------------------------------------------------- defaults


def test_defaults_are_valid_and_match_the_documented_values() -> None:
    cfg = NodeConfig()
    assert config_from_mapping({}) == cfg
    assert cfg.data_dir is None
    assert cfg.log_level == "info"
    assert cfg.p2p.listen == ("/ip4/0.0.0.0/tcp/7470",)
    assert cfg.p2p.network_key is None
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 7471)
    assert cfg.discovery.mdns
    assert cfg.discovery.dht
    assert cfg.models.serve_default


def test_config_is_frozen() -> None:
    cfg = NodeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.log_level = "debug"  # type: ignore[misc]


def test_a_full_mapping_is_normalised() -> None:
    cfg = config_from_mapping({
        "data_dir": "/var/lib/peerllm",
        "log_level": "DEBUG",
        "node": {"name": "gpu-box", "id": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
                 "location": " rack-2 ", "tags": ["gpu", " fast "]},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0", "/ip6/::/tcp/7470"],
                "announce": ["/dns4/node.example.org/tcp/7470"],
                "bootstrap": [f"/ip4/192.0.2.1/tcp/7470/p2p/{PEER}"],
                "network_key": KEY.upper(), "dial_timeout_s": 2, "max_peers": 10},
        "discovery": {"mdns": False, "mdns_interfaces": ["192.168.1.5", "fe80::1"],
                      "dht_republish_s": 60},
        "api": {"host": "[::1]", "port": 0},
        "models": {"serve_default": False, "paths": ["./m.gguf"]},
    })
    assert cfg.data_dir == Path("/var/lib/peerllm")
    assert cfg.log_level == "debug"
    assert cfg.node.id == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert (cfg.node.location, cfg.node.tags) == ("rack-2", ("gpu", "fast"))
    assert cfg.p2p.listen == ("/ip4/127.0.0.1/tcp/0", "/ip6/::/tcp/7470")
    assert cfg.p2p.network_key == KEY
    assert isinstance(cfg.p2p.dial_timeout_s, float)
    assert cfg.p2p.dial_timeout_s == 2.0
    assert (cfg.api.host, cfg.api.port) == ("::1", 0)
    assert cfg.models.paths == ("./m.gguf",)


def test_lists_become_tuples_when_constructed_directly() -> None:
    cfg = P2PConfig(listen=["/ip4/0.0.0.0/tcp/1"])  # type: ignore[arg-type]
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/1",)
    hash(NodeConfig(p2p=cfg))  # frozen and hashable all the way down


def test_data_dir_expands_the_home_directory() -> None:
    assert config_from_mapping({"data_dir": "~/peer"}).data_dir == Path.home() / "peer"


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("data", "key", "suggestion"),
    [
        ({"p2p": {"lisen": ["/ip4/0.0.0.0/tcp/1"]}}, "p2p.lisen", "'p2p.listen'"),
        ({"discovery": {"mdsn": True}}, "discovery.mdsn", "'discovery.mdns'"),
        ({"api": {"prot": 1}}, "api.prot", "'api.port'"),
        ({"log_levl": "info"}, "log_levl", "'log_level'"),
        ({"name": "box"}, "name", "'node.name'"),
        ({"p2p": {"tags": []}}, "p2p.tags", "'node.tags'"),
    ],
)
def test_unknown_key_names_the_dotted_path_and_suggests(
    data: dict[str, Any], key: str, suggestion: str
) -> None:
    exc = error_for(data)
    assert exc.key == key
    assert f"did you mean {suggestion}?" in exc.message


def test_unknown_key_without_a_close_match_lists_the_valid_ones() -> None:
    exc = error_for({"api": {"zzzzzz": 1}})
    assert exc.key == "api.zzzzzz"
    valid = exc.message.partition("valid here: ")[2].partition(" (")[0].split(", ")
    assert {"host", "port", "body_timeout_s"} <= set(valid)


def test_source_is_named_in_errors() -> None:
    with pytest.raises(ConfigError, match=r"from /etc/peerllm.yaml"):
        config_from_mapping({"p2p": {"lisen": []}}, source="/etc/peerllm.yaml")


@pytest.mark.parametrize(
    ("data", "key"),
    [({"p2p": ["/ip4/0.0.0.0/tcp/1"]}, "p2p"), ({"node": "box"}, "node"), ({1: 2}, "config")],
)
def test_sections_must_be_mappings_with_string_keys(data: dict[Any, Any], key: str) -> None:
    assert error_for(data).key == key


def test_an_empty_section_means_defaults() -> None:
    assert config_from_mapping({"p2p": None, "api": {}}) == NodeConfig()


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "key_value", ["abc", KEY[:-1], KEY + "0", "g" * 64, f" {KEY[:32]} ", "0x" + KEY[:62]]
)
def test_bad_network_key_says_64_hex_characters(key_value: str) -> None:
    exc = error_for({"p2p": {"network_key": key_value}})
    assert exc.key == "p2p.network_key"
    assert "64 hex characters" in exc.message


def test_numeric_network_key_from_yaml_gets_a_quoting_hint() -> None:
    exc = error_for({"p2p": {"network_key": int("1" * 64)}})
    assert "64 hex characters" in exc.message
    assert "quote" in exc.message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("p2p", "listen", ["/ip4/0.0.0.0/tcp/notaport"]),
        ("p2p", "listen", ["/ip4/999.0.0.1/tcp/1"]),
        ("p2p", "listen", ["0.0.0.0:7470"]),
        ("p2p", "listen", ["/ip4/0.0.0.0/udp/7470"]),
        ("p2p", "listen", []),
        ("p2p", "listen", "/ip4/0.0.0.0/tcp/7470"),
        ("p2p", "announce", ["/ip4/1.2.3.4"]),
        ("p2p", "bootstrap", ["/ip4/192.0.2.1/tcp/7470"]),
        ("p2p", "bootstrap", ["/ip4/192.0.2.1/tcp/7470/p2p/notapeerid"]),
    ],
)
def test_bad_multiaddrs_are_rejected(section: str, key: str, value: Any) -> None:
    assert error_for({section: {key: value}}).key == f"{section}.{key}"


@pytest.mark.parametrize("port", [-1, 65536, 70000, "7471", 7471.0, True, None])
def test_bad_api_port(port: Any) -> None:
    assert error_for({"api": {"port": port}}).key == "api.port"


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_good_api_ports(port: int) -> None:
    assert config_from_mapping({"api": {"port": port}}).api.port == port


@pytest.mark.parametrize("value", ["maybe", "yes", "true", 1, 0, None])
def test_bools_must_be_real_bools(value: Any) -> None:
    assert error_for({"discovery": {"mdns": value}}).key == "discovery.mdns"
    assert error_for({"models": {"serve_default": value}}).key == "models.serve_default"


def test_yaml_yes_and_no_are_bools(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("discovery:\n  mdns: no\n  dht: yes\n")
    cfg = NodeConfig.from_yaml(path)
    assert (cfg.discovery.mdns, cfg.discovery.dht) == (False, True)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"node": {"name": ["a", "b"]}}, "node.name"),
        ({"node": {"location": 5}}, "node.location"),
        ({"node": {"name": ""}}, "node.name"),
        ({"node": {"tags": "gpu"}}, "node.tags"),
        ({"node": {"tags": ["gpu", 3]}}, "node.tags"),
        ({"node": {"tags": ["gpu", " "]}}, "node.tags"),
        ({"node": {"id": "not-a-uuid"}}, "node.id"),
        ({"api": {"host": ["127.0.0.1"]}}, "api.host"),
        ({"api": {"host": "a b"}}, "api.host"),
        ({"models": {"paths": "m.gguf"}}, "models.paths"),
        ({"discovery": {"mdns_interfaces": ["eth0"]}}, "discovery.mdns_interfaces"),
        ({"log_level": "verbose"}, "log_level"),
        ({"log_level": 10}, "log_level"),
        ({"data_dir": ""}, "data_dir"),
        ({"data_dir": ["/tmp"]}, "data_dir"),
    ],
)
def test_types_are_checked_strictly(data: dict[str, Any], key: str) -> None:
    assert error_for(data).key == key


@pytest.mark.parametrize(
    "name",
    ["dial_timeout_s", "call_timeout_s", "heartbeat_interval_s", "peer_stale_s"],
)
@pytest.mark.parametrize("value", [0, -1.5, math.nan, math.inf, "5", True, None])
def test_durations_must_be_positive_finite_numbers(name: str, value: Any) -> None:
    assert error_for({"p2p": {name: value}}).key == f"p2p.{name}"


@pytest.mark.parametrize(
    ("section", "name"),
    [("p2p", "heartbeat_misses"), ("p2p", "max_peers"), ("discovery", "known_peers_max")],
)
@pytest.mark.parametrize("value", [0, -1, 2.5, "3", False])
def test_counts_must_be_whole_numbers_of_at_least_one(section: str, name: str, value: Any) -> None:
    assert error_for({section: {name: value}}).key == f"{section}.{name}"


def test_record_ttl_limits() -> None:
    assert error_for({"discovery": {"dht_republish_s": 3600}}).key == "discovery.dht_republish_s"
    assert error_for({"discovery": {"record_ttl_s": 2 * 86400}}).key == "discovery.record_ttl_s"
    with pytest.raises(ConfigError):
        DiscoveryConfig(dht_republish_s=10.0, record_ttl_s=5.0)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match="64 hex characters"):
        P2PConfig(network_key="nope")
    with pytest.raises(ConfigError):
        ApiConfig(port=-1)
    with pytest.raises(ConfigError):
        NodeIdentityConfig(tags=("",))
    with pytest.raises(ConfigError):
        NodeConfig(p2p={"listen": []})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- API address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7471", ("127.0.0.1", 7471)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":8080", ("127.0.0.1", 8080)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:7471", ("::1", 7471)),
        ("[::]:65535", ("::", 65535)),
        ("http://127.0.0.1:7471/", ("127.0.0.1", 7471)),
        (" 10.0.0.2:80 ", ("10.0.0.2", 80)),
    ],
)
def test_parse_api_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_api_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "7471", "host", "host:", "host:port", "host:65536", "host:-1", "::1:7471",
     "[::1]7471", "[::1", "[nothost]:1", "https://host:1", "http://host:1/v1", "a b:1"],
)
def test_parse_api_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_api_address(text)
    assert info.value.key == "api"
