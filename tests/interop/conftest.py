"""Fixtures for the interop tests: real PeerLLM nodes on 127.0.0.1 against another libp2p
implementation (js-libp2p, tests/interop/js/). Without node or the pinned npm packages the
tests skip, except under ``PEERLLM_CI=1`` (set by .ci/run), where they must run."""

from __future__ import annotations

import os

import pytest

from tests.interop import jspeer


@pytest.fixture
def js_libp2p() -> None:
    """Skip (or fail in CI) unless the js peer can run; decides before any node starts."""
    problem = jspeer.missing()
    if problem is None:
        return
    if os.environ.get("PEERLLM_CI") == "1":
        pytest.fail(f"the js-libp2p interop lane must run in CI: {problem}")
    pytest.skip(f"js-libp2p interop lane: {problem}")
