"""Fixtures for tests that run real libp2p hosts, zeroconf and `peerllm` daemons on 127.0.0.1
(no model): the shared ones (make_config, daemon) are in tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.helpers import multicast_problem


@pytest.fixture(scope="session")
def multicast() -> None:
    """Skips the test on machines where multicast does not loop back on 127.0.0.1."""
    problem = multicast_problem()
    if problem is not None:
        pytest.skip(f"multicast unavailable on this machine: {problem}")
