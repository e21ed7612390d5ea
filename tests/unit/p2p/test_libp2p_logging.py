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


def test_a_refused_handshake_is_not_logged_again_as_a_libp2p_error(
        caplog: pytest.LogCaptureFixture) -> None:
    # p2p/transport.py already logged the WARNING naming the peer and the cause; the
    # caller gets NetworkKeyMismatch / PeerUnavailable naming the peer.
    route_libp2p_logging()
    with caplog.at_level(logging.INFO):
        logging.getLogger("libp2p.network.swarm").error(
            "failed to upgrade security for peer %s: %s", "12D3KooW...", "negotiation failed")
        logging.getLogger("libp2p.protocol_muxer.multiselect_client").error(
            "MultiselectClient handshake: read failed: %s", "network key differs")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
