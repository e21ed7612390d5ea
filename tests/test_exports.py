"""The public facade is exactly what __all__ says."""

from __future__ import annotations

import types

import peerllm


def test_all_matches_public_names() -> None:
    public = {name for name, value in vars(peerllm).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert sorted(peerllm.__all__) == sorted(public | {"__version__"})


def test_exported_errors_print_as_peerllm() -> None:
    assert peerllm.PeerUnavailable.__module__ == "peerllm"
    assert issubclass(peerllm.NetworkKeyMismatch, peerllm.PeerLLMError)
