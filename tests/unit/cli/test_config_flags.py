"""`peerllm node` options -> the flags layer -> NodeConfig (parsed, not run), and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click import ClickException
from click.testing import CliRunner

from peerllm.cli import cli
from peerllm.cli.common import build_config
from peerllm.cli.node import flags_layer, node
from peerllm.config import ENV_VARS, InferenceConfig, NodeConfig


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any variable the config reads."""
    for name in (*ENV_VARS, "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def config_for(*args: str) -> NodeConfig:
    params = dict(node.make_context("node", list(args)).params)
    return build_config(params.pop("config_path"), flags_layer(params))


def test_every_inference_flag_sets_its_key(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = config_for("--models-dir", str(tmp_path), "--models-config", str(tmp_path / "m.yaml"),
                     "--preload", "a", "--preload", "b", "--default-model", "a",
                     "--cache-size-gb", "2.5", "--max-concurrent", "2", "--max-queue", "0",
                     "--peer-share", "0.5", "--threads", "3", "--context-size", "4096",
                     "--gpu-layers", "-1", "--parallel", "3")
    assert cfg.inference == InferenceConfig(
        models_dir=tmp_path, models_config_path=tmp_path / "m.yaml", preload=("a", "b"),
        default_model="a", cache_size_gb=2.5, max_concurrent=2, max_queue=0, peer_share=0.5,
        n_threads=3, context_size=4096, gpu_layers=-1, parallel=3)


def test_parallel_is_auto_or_a_number_from_flag_or_env(environ: pytest.MonkeyPatch) -> None:
    assert config_for().inference.parallel == "auto"
    environ.setenv("MODEL_PARALLEL", "2")
    assert config_for().inference.parallel == 2
    assert config_for("--parallel", "AUTO").inference.parallel == "auto"
    environ.setenv("MODEL_PARALLEL", "lots")
    with pytest.raises(ClickException) as info:
        config_for()
    assert "MODEL_PARALLEL" in info.value.message and "'lots'" in info.value.message


def test_flags_beat_env_beat_file(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("inference:\n  max_concurrent: 2\n  max_queue: 3\n  preload: [f]\n")
    environ.setenv("MODEL_MAX_QUEUE", "4")
    environ.setenv("MODEL_PRELOAD", "e")
    cfg = config_for("--config", str(path), "--preload", "x")
    assert (cfg.inference.max_concurrent, cfg.inference.max_queue,
            cfg.inference.preload) == (2, 4, ("x",))


def test_bad_flag_value_names_the_key_before_starting(environ: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["node", "--data-dir", str(tmp_path), "--max-concurrent",
                                      "0"])
    assert result.exit_code == 1
    assert "inference.max_concurrent: must be >= 1, got 0 (from command-line flags)" \
        in result.output
    assert not any(tmp_path.iterdir()), "nothing may start (no identity made)"


def test_bad_env_value_names_the_variable(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environ.setenv("MODEL_CONTEXT_SIZE", "8")
    result = CliRunner().invoke(cli, ["node", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "MODEL_CONTEXT_SIZE: must be >= 16, got 8 (sets inference.context_size)" \
        in result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is the Linux default")
def test_the_cli_resolves_the_data_dir_from_the_environment(environ: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    environ.setenv("XDG_DATA_HOME", str(tmp_path))
    assert config_for().data_dir == tmp_path / "peerllm"
    environ.setenv("PEERLLM_DATA_DIR", str(tmp_path / "mine"))
    assert config_for().data_dir == tmp_path / "mine"
    assert config_for("--data-dir", str(tmp_path / "flag")).data_dir == tmp_path / "flag"


def test_every_browser_tls_and_key_file_flag_sets_its_key(environ: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    key, cert, tls_key = (tmp_path / name for name in ("network.key", "c.pem", "k.pem"))
    key.write_text("ab" * 32)
    cert.write_text("cert")
    tls_key.write_text("key")
    cfg = config_for("--network-key-file", str(key), "--api-tls-cert", str(cert),
                     "--api-tls-key", str(tls_key), "--cors-origin", "http://localhost:3000",
                     "--cors-origin", "https://app.example", "--allowed-host", "node-1.lan")
    assert cfg.p2p.network_key_file == key
    assert cfg.p2p.resolve_network_key() == "ab" * 32
    assert (cfg.api.tls_cert, cfg.api.tls_key) == (cert, tls_key)
    assert cfg.api.cors_origins == ("http://localhost:3000", "https://app.example")
    assert cfg.api.allowed_hosts == ("node-1.lan",)


def test_a_flag_key_and_a_file_key_are_refused_before_starting(environ: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    key = tmp_path / "network.key"
    key.write_text("ab" * 32)
    environ.setenv("PEERLLM_NETWORK_KEY_FILE", str(key))
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["node", "--data-dir", str(data), "--network-key",
                                      "cd" * 32])
    assert result.exit_code == 1
    assert "not both" in result.output
    assert "cd" * 32 not in result.output and "ab" * 32 not in result.output
    assert not data.exists(), "nothing may start (no identity made)"
