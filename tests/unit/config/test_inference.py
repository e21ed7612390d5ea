"""The ``inference`` config section: its checks, and each layer (YAML, env, flags) in order."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from peerllm.config import (
    ENV_VARS,
    InferenceConfig,
    NodeConfig,
    config_from_env,
    config_from_mapping,
    load_config,
)
from peerllm.config.env import TABLE
from peerllm.errors import ConfigError

MODEL_VARS = {name for name in ENV_VARS if name.startswith(("MODEL_", "MODELS_"))}
KEY_OF = {var.name: var.key for var in TABLE}


def refused(**layers: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(**layers)
    return info.value


# --------------------------------------------------------------------------- the section


def test_defaults() -> None:
    cfg = InferenceConfig()
    assert NodeConfig().inference == cfg == config_from_mapping({"inference": {}}).inference
    assert (cfg.max_concurrent, cfg.max_queue, cfg.eviction_policy) == (1, 8, "lru")
    assert (cfg.load_timeout_s, cfg.inference_timeout_s, cfg.warmup_tokens) == (120.0, 300.0, 16)
    assert cfg.use_extra_bufts is False
    assert (cfg.peer_share, cfg.peer_slots) == (1.0, 1)
    assert cfg.cache_size_bytes(8 * 1024**3) == 6 * 1024**3
    assert InferenceConfig(cache_size_gb=1.5).cache_size_bytes(1) == int(1.5 * 1024**3)


@pytest.mark.parametrize(("field", "value"), [
    ("max_concurrent", 0), ("max_queue", -1), ("eviction_policy", "mru"),
    ("load_timeout_s", 0), ("inference_timeout_s", -1.0), ("warmup_tokens", -1),
    ("n_threads", 0), ("cache_size_gb", 0), ("use_extra_bufts", "no"), ("gpu_layers", -2),
    ("context_size", 8), ("preload", "a,b"), ("default_model", ""), ("max_queue", 1.5),
    ("models_dir", ""), ("models_config_path", 3), ("preload", ["a", ""]),
    ("cache_size_gb", float("nan")), ("max_concurrent", True), ("peer_share", 0),
    ("peer_share", 1.5), ("peer_share", "half"),
])
def test_bad_value_names_the_dotted_key(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        InferenceConfig(**{field: value})
    assert info.value.key == f"inference.{field}"
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"inference": {field: value}})
    assert info.value.key == f"inference.{field}"


def test_paths_lists_and_case_are_normalised() -> None:
    cfg = InferenceConfig(models_dir="~/models", preload=["a", " b "],  # type: ignore[arg-type]
                          eviction_policy="LFU")  # type: ignore[arg-type]
    assert cfg.models_dir == Path("~/models").expanduser()
    assert cfg.preload == ("a", "b")
    assert cfg.eviction_policy == "lfu"
    assert isinstance(InferenceConfig(load_timeout_s=5).load_timeout_s, float)


# --------------------------------------------------------------------------- YAML


def test_yaml_section(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("inference:\n  models_dir: ~/models\n  preload: [a, b]\n"
                    "  max_concurrent: 2\n  cache_size_gb: 3\n  use_extra_bufts: yes\n"
                    "  eviction_policy: fifo\n  n_threads: 4\n")
    cfg = NodeConfig.from_yaml(path).inference
    assert cfg == InferenceConfig(models_dir=Path.home() / "models", preload=("a", "b"),
                                  max_concurrent=2, cache_size_gb=3.0, use_extra_bufts=True,
                                  eviction_policy="fifo", n_threads=4)


def test_yaml_bad_value_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("inference:\n  max_queue: -1\n")
    for load in (lambda: NodeConfig.from_yaml(path), lambda: load_config(path)):
        with pytest.raises(ConfigError) as info:
            load()
        assert info.value.key == "inference.max_queue"
        assert str(path) in info.value.message


@pytest.mark.parametrize(("data", "suggestion"), [
    ({"inference": {"max_concurent": 2}}, "'inference.max_concurrent'"),
    ({"preload": ["a"]}, "'inference.preload'"),
    ({"scheduling": {"context_size": 1}}, "'inference.context_size'"),
])
def test_unknown_keys_suggest_the_inference_one(data: dict[str, Any], suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}"):
        config_from_mapping(data)


# --------------------------------------------------------------------------- environment

ALL_SET = {
    "MODELS_DIR": "/srv/models", "MODEL_PRELOAD": "a, b,,", "MODEL_DEFAULT": " a ",
    "MODEL_CACHE_SIZE_GB": "12.5", "MODEL_MAX_CONCURRENT": "2", "MODEL_MAX_QUEUE": "0",
    "MODEL_EVICTION_POLICY": "LFU", "MODEL_LOAD_TIMEOUT_SECONDS": "30",
    "MODEL_INFERENCE_TIMEOUT_SECONDS": "60.5", "MODEL_WARMUP_TOKENS": "0",
    "MODELS_CONFIG_PATH": "/etc/peerllm/models.yaml", "MODEL_USE_EXTRA_BUFTS": "on",
    "MODEL_THREADS": "3", "MODEL_GPU_LAYERS": "-1", "MODEL_CONTEXT_SIZE": "4096",
    "MODEL_PEER_SHARE": "0.5", "MODEL_PARALLEL": "3",
}


def test_every_documented_variable_sets_its_key() -> None:
    assert set(ALL_SET) == MODEL_VARS
    cfg = load_config(environ={**ALL_SET, "UNRELATED": "x"}).inference
    assert cfg == InferenceConfig(
        models_dir=Path("/srv/models"), preload=("a", "b"), default_model="a",
        cache_size_gb=12.5, max_concurrent=2, max_queue=0, eviction_policy="lfu",
        load_timeout_s=30.0, inference_timeout_s=60.5, warmup_tokens=0,
        models_config_path=Path("/etc/peerllm/models.yaml"), use_extra_bufts=True,
        n_threads=3, gpu_layers=-1, context_size=4096, peer_share=0.5, parallel=3)


@pytest.mark.parametrize(("max_concurrent", "share", "slots"), [
    (1, 0.1, 1), (1, 1.0, 1), (2, 0.5, 1), (3, 0.5, 1), (4, 0.5, 2), (4, 0.75, 3),
    (10, 0.3, 3), (8, 1.0, 8)])
def test_peer_slots_is_the_share_rounded_down_but_at_least_one(
        max_concurrent: int, share: float, slots: int) -> None:
    assert InferenceConfig(max_concurrent=max_concurrent, peer_share=share).peer_slots == slots


def test_env_layer_is_text_parsed_into_the_section() -> None:
    layer = config_from_env({"MODEL_MAX_QUEUE": "4", "MODEL_PRELOAD": "a,b",
                             "MODEL_USE_EXTRA_BUFTS": "false", "MODEL_DEFAULT": "  "})
    assert layer == {"inference": {"max_queue": 4, "preload": ["a", "b"],
                                   "use_extra_bufts": False}}
    assert config_from_env({}) == {}


@pytest.mark.parametrize(("name", "value"), [
    ("MODEL_CACHE_SIZE_GB", "lots"), ("MODEL_MAX_CONCURRENT", "1.5"),
    ("MODEL_INFERENCE_TIMEOUT_SECONDS", "soon"), ("MODEL_USE_EXTRA_BUFTS", "maybe"),
])
def test_unparsable_env_value_names_the_variable_and_key(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_env({name: value})
    assert info.value.key == name
    assert f"(sets {KEY_OF[name]})" in info.value.message


@pytest.mark.parametrize(("name", "value"), [
    ("MODEL_CACHE_SIZE_GB", "-1"), ("MODEL_CACHE_SIZE_GB", "nan"),
    ("MODEL_MAX_CONCURRENT", "0"), ("MODEL_EVICTION_POLICY", "random"),
    ("MODEL_LOAD_TIMEOUT_SECONDS", "0"), ("MODEL_WARMUP_TOKENS", "-3"),
    ("MODEL_CONTEXT_SIZE", "8"), ("MODEL_GPU_LAYERS", "-2"), ("MODEL_THREADS", "0"),
])
def test_out_of_range_env_value_names_the_variable_and_key(name: str, value: str) -> None:
    exc = refused(environ={name: value})
    assert exc.key == name
    assert f"(sets {KEY_OF[name]})" in exc.message


# --------------------------------------------------------------------------- flags


def test_flags_layer() -> None:
    cfg = load_config(flags={"inference": {"max_concurrent": 3, "preload": ["x"],
                                           "models_config_path": "/m.yaml"}}).inference
    assert (cfg.max_concurrent, cfg.preload, cfg.models_config_path) == (3, ("x",),
                                                                         Path("/m.yaml"))


def test_bad_flag_value_names_the_key_and_the_flags() -> None:
    exc = refused(environ={"MODEL_MAX_CONCURRENT": "2"},
                  flags={"inference": {"max_concurrent": 0}})
    assert exc.key == "inference.max_concurrent"
    assert "command-line flags" in exc.message


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(("in_file", "in_env", "in_flags"),
                         list(itertools.product([False, True], repeat=3)))
def test_defaults_lt_file_lt_env_lt_flags(tmp_path: Path, in_file: bool, in_env: bool,
                                          in_flags: bool) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("inference:\n  max_queue: 1\n" if in_file else "{}\n")
    cfg = load_config(path, environ={"MODEL_MAX_QUEUE": "2"} if in_env else {},
                      flags={"inference": {"max_queue": 3}} if in_flags else {})
    expected = 3 if in_flags else 2 if in_env else 1 if in_file else InferenceConfig().max_queue
    assert cfg.inference.max_queue == expected


def test_layers_merge_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("inference:\n  max_concurrent: 2\n  preload: [a]\n  warmup_tokens: 5\n")
    cfg = load_config(path, environ={"MODEL_PRELOAD": "b,c", "MODEL_WARMUP_TOKENS": "6"},
                      flags={"inference": {"warmup_tokens": 7}}).inference
    assert (cfg.max_concurrent, cfg.preload, cfg.warmup_tokens) == (2, ("b", "c"), 7)
    assert cfg.context_size == InferenceConfig().context_size
