"""Config layers: env parsing, merging, YAML files, the example file, and precedence."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from peerllm.config import (
    ALL_KEYS,
    ENV_VARS,
    NodeConfig,
    config_from_env,
    config_from_mapping,
    load_config,
    load_yaml_config,
    merge_layers,
)
from peerllm.errors import ConfigError
from tests.helpers import REPO

EXAMPLE = REPO / "configs" / "node.example.yaml"
PEER = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
KEY = "0123456789abcdef" * 4

# --------------------------------------------------------------------------- environment


def test_env_maps_every_variable() -> None:
    env = {
        "PEERLLM_DATA_DIR": "/data",
        "PEERLLM_NODE_NAME": "box",
        "NODE_ID": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "NODE_LOCATION": "rack-2",
        "NODE_TAGS": " gpu, ,fast,",
        "PEERLLM_LISTEN": "/ip4/0.0.0.0/tcp/1, /ip4/0.0.0.0/tcp/2",
        "PEERLLM_BOOTSTRAP": f"/ip4/192.0.2.1/tcp/7470/p2p/{PEER}",
        "PEERLLM_NETWORK_KEY": KEY,
        "PEERLLM_MDNS": "off",
        "PEERLLM_API": "0.0.0.0:9000",
        "PEERLLM_API_CORS_ORIGINS": "http://localhost:3000, https://app.example",
        "PEERLLM_API_ALLOWED_HOSTS": "node-1.lan",
        "PEERLLM_LOG_LEVEL": "debug",
        "PEERLLM_REQUIRE_AUTH": "yes",
        "PEERLLM_TRUSTED_ISSUERS": f"ed25519:{'A' * 43}, {'ab' * 32}",
        "PEERLLM_UPLOAD_LIMIT": "50",
        "HF_ENDPOINT": "http://127.0.0.1:9/hub",
        "HF_TOKEN": "hf_secret",
        "HF_TOKEN_FILE": "/run/hf.token",
        "HOME": "/ignored",
    }
    layer = config_from_env(env)
    assert layer == {
        "data_dir": "/data",
        "log_level": "debug",
        "node": {"name": "box", "id": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
                 "location": "rack-2", "tags": ["gpu", "fast"]},
        "p2p": {"listen": ["/ip4/0.0.0.0/tcp/1", "/ip4/0.0.0.0/tcp/2"],
                "bootstrap": [f"/ip4/192.0.2.1/tcp/7470/p2p/{PEER}"], "network_key": KEY},
        "discovery": {"mdns": False},
        "api": {"host": "0.0.0.0", "port": 9000,
                "cors_origins": ["http://localhost:3000", "https://app.example"],
                "allowed_hosts": ["node-1.lan"]},
        "auth": {"required": True, "trusted_issuers": [f"ed25519:{'A' * 43}", "ab" * 32]},
        "models": {"upload_limit": 50.0, "hf_endpoint": "http://127.0.0.1:9/hub",
                   "hf_token": "hf_secret", "hf_token_file": "/run/hf.token"},
    }
    config_from_mapping({k: v for k, v in layer.items() if k != "models"})
    config_from_mapping({"models": {"upload_limit": 50.0, "hf_token": "hf_secret"}})  # valid
    # The file-valued ones (they must name files that exist) are in the next test.
    files = {"PEERLLM_NETWORK_KEY_FILE", "PEERLLM_API_TLS_CERT", "PEERLLM_API_TLS_KEY"}
    node_vars = {name for name in ENV_VARS if not name.startswith(("MODEL_", "MODELS_"))}
    assert node_vars == {k for k in env if k != "HOME"} | {"NODE_NAME"} | files


def test_env_names_the_secret_files(tmp_path: Path) -> None:
    key, cert, tls_key = tmp_path / "network.key", tmp_path / "c.pem", tmp_path / "k.pem"
    for path in (key, cert, tls_key):
        path.write_text(KEY)
    env = {"PEERLLM_NETWORK_KEY_FILE": str(key), "PEERLLM_API_TLS_CERT": str(cert),
           "PEERLLM_API_TLS_KEY": str(tls_key)}
    assert config_from_env(env) == {
        "p2p": {"network_key_file": str(key)},
        "api": {"tls_cert": str(cert), "tls_key": str(tls_key)}}
    cfg = load_config(environ=env)
    assert (cfg.p2p.network_key_file, cfg.api.tls_cert, cfg.api.tls_key) == (key, cert, tls_key)
    assert cfg.p2p.network_key is None  # the file is read where the key is used
    assert cfg.p2p.resolve_network_key() == KEY


def test_env_blames_the_variable_for_a_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"PEERLLM_NETWORK_KEY_FILE": str(tmp_path / "nope")})
    assert info.value.key == "PEERLLM_NETWORK_KEY_FILE"
    assert f"network key file {tmp_path / 'nope'} does not exist" in info.value.message
    assert "(sets p2p.network_key_file)" in info.value.message


def test_env_ignores_unrelated_and_blank_variables() -> None:
    assert config_from_env({"PATH": "/bin", "NODE_NAME": "  ", "PEERLLM_MDNS": ""}) == {}


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"NODE_NAME": "alias"}, "alias"),
        ({"PEERLLM_NODE_NAME": "main"}, "main"),
        ({"NODE_NAME": "alias", "PEERLLM_NODE_NAME": "main"}, "main"),
        ({"PEERLLM_NODE_NAME": "main", "NODE_NAME": "alias"}, "main"),
        ({"PEERLLM_NODE_NAME": " ", "NODE_NAME": "alias"}, "alias"),
    ],
)
def test_node_name_alias_precedence(env: dict[str, str], name: str) -> None:
    assert config_from_env(env)["node"]["name"] == name


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True),
     ("0", False), ("False", False), ("no", False), ("off", False)],
)
def test_env_mdns_values(value: str, expected: bool) -> None:
    assert config_from_env({"PEERLLM_MDNS": value}) == {"discovery": {"mdns": expected}}


@pytest.mark.parametrize(("name", "value"), [("PEERLLM_MDNS", "maybe"), ("PEERLLM_API", "nope")])
def test_env_parse_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_env({name: value})
    assert info.value.key == name


# --------------------------------------------------------------------------- layering


def test_merge_layers_later_wins_deeply() -> None:
    file: dict[str, Any] = {
        "log_level": "warning",
        "p2p": {"max_peers": 5, "listen": ["/ip4/0.0.0.0/tcp/1"]},
        "api": {"port": 1},
    }
    env = {"p2p": {"max_peers": 6}, "api": {"host": "0.0.0.0"}}
    flags = {"p2p": {"listen": ["/ip4/0.0.0.0/tcp/3"]}, "log_level": "error"}
    before = repr((file, env, flags))
    merged = merge_layers(file, env, flags)
    assert merged == {"log_level": "error",
                      "p2p": {"max_peers": 6, "listen": ["/ip4/0.0.0.0/tcp/3"]},
                      "api": {"port": 1, "host": "0.0.0.0"}}
    assert repr((file, env, flags)) == before  # inputs untouched
    merged["p2p"]["max_peers"] = 0
    assert file["p2p"]["max_peers"] == 5


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("log_level: warning\nnode:\n  name: from-file\n  location: file-loc\n"
                    "api:\n  port: 8000\n")
    env = config_from_env({"PEERLLM_NODE_NAME": "from-env", "NODE_LOCATION": "env-loc"})
    flags = {"node": {"name": "from-flag"}}
    cfg = config_from_mapping(merge_layers(load_yaml_config(path), env, flags))
    assert cfg.node.name == "from-flag"
    assert cfg.node.location == "env-loc"
    assert cfg.log_level == "warning"
    assert cfg.api.port == 8000
    assert cfg.api.host == "127.0.0.1"


def test_load_config_is_the_same_layering(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("log_level: warning\nnode:\n  name: from-file\n")
    environ = {"PEERLLM_NODE_NAME": "from-env", "NODE_LOCATION": "env-loc"}
    flags = {"api": {"port": 9}}
    assert load_config(path, environ=environ, flags=flags) == config_from_mapping(
        merge_layers(load_yaml_config(path), config_from_env(environ), flags))
    assert load_config() == NodeConfig()


def test_load_config_never_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PEERLLM_NODE_NAME", "from-process")
    monkeypatch.setenv("MODEL_MAX_QUEUE", "-1")
    assert load_config() == NodeConfig()


def test_load_config_blames_the_layer_that_gave_the_value(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("log_level: loud\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.key, str(path) in info.value.message) == ("log_level", True)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"PEERLLM_LOG_LEVEL": "louder"})
    assert info.value.key == "PEERLLM_LOG_LEVEL"
    assert "(sets log_level)" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"PEERLLM_LOG_LEVEL": "louder"},
                    flags={"log_level": "loudest"})
    assert info.value.key == "log_level"
    assert "command-line flags" in info.value.message


# --------------------------------------------------------------------------- YAML files


def test_empty_yaml_file_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# only a comment\n")
    assert load_yaml_config(path) == {}


def test_missing_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_yaml_config(path)
    assert info.value.key == "config"
    assert str(path) in info.value.message


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("p2p:\n  listen: [a, b\napi: {\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path)
    assert info.value.key == "config"
    assert str(path) in info.value.message
    assert "line 3, column" in info.value.message


def test_duplicate_yaml_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("p2p:\n  max_peers: 1\np2p:\n  max_peers: 2\n")
    with pytest.raises(ConfigError, match="line 3, column 1: found duplicate key 'p2p'"):
        load_yaml_config(path)


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {port: 1, host: h}\napi:\n  <<: *b\n  port: 2\n")
    assert load_yaml_config(path)["api"] == {"port": 2, "host": "h"}


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="top level") as info:
        load_yaml_config(path)
    assert info.value.key == "config"


def test_directory_instead_of_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml_config(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match="permission denied"):
            load_yaml_config(path)
    finally:
        path.chmod(0o600)


def test_from_yaml_rejects_unknown_keys_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("p2p:\n  lisen: []\n")
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_yaml(path)
    assert info.value.key == "p2p.lisen"
    assert str(path) in info.value.message


# --------------------------------------------------------------------------- example file


def test_example_file_is_the_defaults() -> None:
    assert NodeConfig.from_yaml(EXAMPLE) == NodeConfig()


def test_example_file_documents_every_key() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    keys = {
        f"{top}.{sub}" if isinstance(value, dict) else top
        for top, value in doc.items()
        for sub in (value if isinstance(value, dict) else [None])
    }
    assert keys == set(ALL_KEYS)
    text = EXAMPLE.read_text()
    for name in ENV_VARS:
        assert name in text
    assert "flags > environment variables > this file" in text


# --------------------------------------------------------------------------- the edge

SRC = REPO / "src" / "peerllm"
_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _is_env_access(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr in _ENV_NAMES and isinstance(node.value, ast.Name) \
            and node.value.id == "os"
    if isinstance(node, ast.ImportFrom):
        return node.module == "os" and any(alias.name in _ENV_NAMES for alias in node.names)
    return False


def _reads_environment(tree: ast.AST) -> list[int]:
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute | ast.ImportFrom) and _is_env_access(node)]


def test_only_the_cli_reads_the_process_environment() -> None:
    offenders = {
        str(path.relative_to(SRC)): lines
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] not in ("cli", "api")
        and (lines := _reads_environment(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert offenders == {}
