"""`peerllm node` gives llama.cpp's OpenMP threads OMP_WAIT_POLICY=PASSIVE, before
llama.cpp loads and never over the user's own choice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from peerllm.cli import cli
from peerllm.cli.node import OMP_WAIT_POLICY, prefer_passive_openmp


def test_it_is_set_when_the_user_did_not_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    environ: dict[str, str] = {}
    assert prefer_passive_openmp(environ) is True
    assert environ == {"OMP_WAIT_POLICY": OMP_WAIT_POLICY}


def test_the_users_value_is_kept() -> None:
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prefer_passive_openmp(environ) is None
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_once_llama_cpp_is_loaded_it_is_too_late(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", sys)  # any module object will do
    environ: dict[str, str] = {}
    assert prefer_passive_openmp(environ) is False
    assert environ == {}


def test_peerllm_node_sets_it_before_anything_else(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # conftest restores it
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    bad = tmp_path / "node.yaml"
    bad.write_text("inference: {parallel: lots}\n")
    result = CliRunner().invoke(cli, ["node", "--config", str(bad)])
    assert result.exit_code != 0 and "inference.parallel" in result.output
    assert os.environ["OMP_WAIT_POLICY"] == OMP_WAIT_POLICY
