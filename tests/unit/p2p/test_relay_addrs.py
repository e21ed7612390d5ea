"""Circuit addresses: parsing what peers advertise, building what we advertise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.p2p.relay import Reservation, _relay_addrs, is_circuit, split_circuit

R = "12D3KooWJBDK5PaJrW5GiChdL5KYceC2ew3octH8E3L7sfaxqL2Z"
C = "12D3KooWHa1b3Zgk7X4eCBQ5TFYVtYKGzmS5ZqdreWTi789tXQo6"


def test_split_names_relay_its_address_and_the_peer() -> None:
    addr = f"/ip4/198.51.100.7/tcp/4001/p2p/{R}/p2p-circuit/p2p/{C}"
    assert is_circuit(addr)
    assert split_circuit(addr) == (R, [f"/ip4/198.51.100.7/tcp/4001/p2p/{R}"], C)


def test_split_without_the_relays_transport_address() -> None:
    assert split_circuit(f"/p2p/{R}/p2p-circuit/p2p/{C}") == (R, [], C)


@pytest.mark.parametrize("bad", [
    f"/ip4/1.2.3.4/tcp/1/p2p/{C}",                       # not a circuit
    f"/ip4/1.2.3.4/tcp/1/p2p-circuit/p2p/{C}",            # no relay id
    f"/p2p/{R}/p2p-circuit",                              # no target
    f"/p2p/{R}/p2p-circuit/p2p/{C}/p2p-circuit/p2p/{R}",  # a circuit through a circuit
    f"/p2p/{R}/p2p-circuit/p2p/not-a-peer-id",
    f"/p2p/{R}/p2p-circuit/p2p/{C}/tcp/1",
])
def test_split_refuses_what_is_not_one_hop_to_a_peer(bad: str) -> None:
    with pytest.raises(ValueError, match="circuit address"):
        split_circuit(bad)


_PIECES = st.sampled_from(["/p2p/", "/p2p-circuit", "/ip4/1.2.3.4", "/tcp/1", R, C, "111",
                           "0OIl", "/", "x"])


@given(st.lists(_PIECES, max_size=8).map("".join) | st.text(max_size=80))
def test_split_never_raises_anything_but_value_error(text: str) -> None:
    try:
        relay, _, peer = split_circuit(text)
    except ValueError:
        return
    assert {relay, peer} <= {R, C}


def test_our_circuit_addrs_from_a_reservation() -> None:
    rsv = Reservation(relay=R, expires_at=0.0, addrs=(f"/ip4/10.0.0.1/tcp/9/p2p/{R}",),
                      duration_s=60, bytes_limit=1)
    assert rsv.circuit_addrs(C) == [f"/ip4/10.0.0.1/tcp/9/p2p/{R}/p2p-circuit/p2p/{C}"]


def test_relay_addrs_get_the_relay_id_and_lose_junk_and_circuits() -> None:
    import multiaddr

    raw = [multiaddr.Multiaddr("/ip4/10.0.0.1/tcp/9").to_bytes(), b"\xff\xffjunk",
           multiaddr.Multiaddr(f"/ip4/10.0.0.2/tcp/9/p2p/{R}").to_bytes(),
           multiaddr.Multiaddr(f"/p2p/{C}/p2p-circuit/p2p/{R}").to_bytes()]
    assert _relay_addrs(R, raw) == [f"/ip4/10.0.0.1/tcp/9/p2p/{R}",
                                    f"/ip4/10.0.0.2/tcp/9/p2p/{R}"]
