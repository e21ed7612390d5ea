"""py-libp2p's routine ERROR records (a peer left) are lowered; real errors stay errors."""

from __future__ import annotations

import logging

import pytest

from peerllm.p2p.host import route_libp2p_logging


def test_routine_libp2p_errors_are_lowered(caplog: pytest.LogCaptureFixture) -> None:
    route_libp2p_logging()
    route_libp2p_logging()  # idempotent: one filter per logger
    tcp = logging.getLogger("libp2p.transport.tcp.tcp")
    assert len(tcp.filters) == 1
    with caplog.at_level(logging.INFO):
        tcp.error("Failed to open TCP stream: all attempts to connect to 127.0.0.1:1 failed")
        logging.getLogger("libp2p.kad_dht.utils").error(
            "Failed to update the Certified-Addr-Book")
        tcp.error("listener crashed")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("libp2p.transport.tcp.tcp", "ERROR", "listener crashed")]
