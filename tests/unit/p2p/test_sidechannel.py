"""Where a node's side channels listen (the libp2p listen IP)."""

from __future__ import annotations

import pytest

from peerllm.p2p.sidechannel import listen_ip


@pytest.mark.parametrize(("listen", "ip"), [
    (["/ip4/0.0.0.0/tcp/4001"], "0.0.0.0"), (["/ip6/::1/tcp/4001"], "::1"),
    (["/dns4/x.example/tcp/1", "/ip4/10.0.0.2/tcp/9"], "10.0.0.2"), (["/ip4/1.2.3.4/udp/1"], None)])
def test_side_channels_listen_on_the_libp2p_listen_ip(listen: list[str], ip: str | None
                                                      ) -> None:
    assert listen_ip(listen) == ip
