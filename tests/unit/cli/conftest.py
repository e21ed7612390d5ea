"""CLI tests run commands in this process: undo what `peerllm node` does to the
environment (OMP_WAIT_POLICY, cli/node.py) after each one."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _restore_omp_wait_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.environ.get("OMP_WAIT_POLICY")
    monkeypatch.setenv("OMP_WAIT_POLICY", old or "")  # remembers the original for teardown
    if old is None:
        monkeypatch.delenv("OMP_WAIT_POLICY")
