"""models.yaml parsing and the node's model specs (the config section: test_config_inference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peerllm.errors import ConfigError
from peerllm.inference.specs import ModelSpec, load_models_yaml, parse_models_config
from tests.helpers import REPO

EXAMPLE = REPO / "configs" / "models.example.yaml"


def test_example_file_parses(tmp_path: Path) -> None:
    specs = load_models_yaml(EXAMPLE, models_dir=tmp_path)
    by_id = {s.id: s for s in specs}
    assert list(by_id) == ["gemma3-270m-q4_k_m", "llama-3-8b", "mistral-7b", "nomic-embed-text"]
    gemma = by_id["gemma3-270m-q4_k_m"]
    assert gemma.bundled and gemma.preload and gemma.chat_format == "gemma"
    assert gemma.context_size == 2048 and gemma.gpu_layers == 0
    llama = by_id["llama-3-8b"]
    assert llama.path == tmp_path / "llama-3-8b-instruct.Q4_K_M.gguf"
    assert (llama.context_size, llama.gpu_layers, llama.chat_format) == (8192, -1, "llama-3")
    assert llama.tags == ("chat", "english")
    assert [q for q, _ in by_id["mistral-7b"].variants] == ["Q8_0", "Q5_K_M", "Q4_K_M", "Q2_K"]
    embed = by_id["nomic-embed-text"]
    assert embed.type == "embedding"
    assert embed.path == Path("/srv/models/nomic-embed-text-v1.5.Q8_0.gguf")


def parse(doc: str, base: Path = Path("/models")) -> list[ModelSpec]:
    return parse_models_config(yaml.safe_load(doc), base_dir=base)


def test_relative_paths_resolve_against_the_yaml_dir(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "models.yaml"
    f.parent.mkdir()
    f.write_text("available:\n  - {id: m, path: m.gguf}\n")
    assert load_models_yaml(f)[0].path == tmp_path / "sub" / "m.gguf"
    assert load_models_yaml(f, models_dir=tmp_path)[0].path == tmp_path / "m.gguf"


def test_defaults_block_applies_unless_overridden() -> None:
    specs = parse("""
defaults: {gpu_layers: 12, context_size: 4096}
available:
  - {id: a, path: a.gguf}
  - {id: b, path: b.gguf, context_size: 512, gpu_layers: 0}
""")
    assert [(s.context_size, s.gpu_layers) for s in specs] == [(4096, 12), (512, 0)]


def test_node_defaults_are_the_fallback() -> None:
    specs = parse_models_config({"available": [{"id": "a", "path": "a.gguf"}]},
                                base_dir=Path("/m"), defaults={"context_size": 1024})
    assert specs[0].context_size == 1024


def test_empty_file_means_no_models() -> None:
    assert parse("") == []
    assert parse("available: []") == []


@pytest.mark.parametrize(("doc", "key"), [
    ("availble: []", "availble"),
    ("defaults: {context: 1}", "defaults.context"),
    ("available:\n - {id: a, path: a.gguf}\n - {id: b, path: b.gguf}\n"
     " - {id: c, path: c.gguf, contex_size: 10}", "available[2].contex_size"),
    ("available: [{id: a, path: a.gguf, context_size: big}]", "available[0].context_size"),
    ("available: [{id: a, path: a.gguf, context_size: 8}]", "available[0].context_size"),
    ("available: [{id: a, path: a.gguf, gpu_layers: -2}]", "available[0].gpu_layers"),
    ("available: [{id: a, path: a.gguf, preload: 'yes'}]", "available[0].preload"),
    ("available: [{id: a, path: a.gguf, tags: x}]", "available[0].tags"),
    ("available: [{id: a, path: a.gguf, type: chat}]", "available[0].type"),
    ("available: [{id: a, path: 3}]", "available[0].path"),
    ("available: [{path: a.gguf}]", "available[0].id"),
    ("available: [{id: 'bad id', path: a.gguf}]", "available[0].id"),
    ("available: [{id: a}]", "available[0].path"),
    ("available: [{id: a, bundled: true, path: a.gguf}]", "available[0].bundled"),
    ("available: [{id: a, variants: {Q9_X: a.gguf}}]", "available[0].variants.Q9_X"),
    ("available: [{id: a, variants: [a.gguf]}]", "available[0].variants"),
    ("available: [{id: a, path: a.gguf}, {id: a, path: b.gguf}]", "available[1].id"),
    ("available: {id: a}", "available"),
    ("- a", "models.yaml"),
])
def test_bad_entries_name_the_key(doc: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert info.value.key == key


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models_config_path"):
        load_models_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("available: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_models_yaml(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("available: [{id: a, path: a.gguf, colour: red}]")
    with pytest.raises(ConfigError, match=r"typo\.yaml") as info:
        load_models_yaml(typo)
    assert info.value.key == "available[0].colour"


def test_node_specs_merge_catalog_and_yaml(tmp_path: Path) -> None:
    from peerllm.inference.catalog import ModelEntry
    from peerllm.inference.specs import node_specs

    bundled = ModelEntry(id="gemma3-270m-q4_k_m", path=None, size_bytes=1, chat_format="gemma",
                         source="bundled")
    extra = ModelEntry(id="x", path=tmp_path / "x.gguf", size_bytes=2, chat_format=None,
                       source="file")
    f = tmp_path / "models.yaml"
    f.write_text("available:\n  - {id: gemma3-270m-q4_k_m, bundled: true, preload: true}\n"
                 "  - {id: y, path: y.gguf}\n")
    specs = node_specs(catalog=[bundled, extra], models_yaml=f, context_size=4096)
    assert [(s.id, s.preload, s.context_size) for s in specs] == [
        ("x", False, 4096), ("gemma3-270m-q4_k_m", True, 4096), ("y", False, 4096)]
    assert node_specs(catalog=[bundled])[0].bundled
