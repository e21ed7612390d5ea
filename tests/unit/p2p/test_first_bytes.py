"""The first-bytes verdict (p2p/transport.py): which bytes start one of our connections,
and which cause a refusal names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peerllm.p2p.transport import (
    KEY_DIFFERS,
    MULTISTREAM_HEADER,
    OLD_PRELUDE_MAGIC,
    first_bytes_problem,
    nonce_problem,
)


def test_the_header_is_multistream_selects() -> None:
    assert MULTISTREAM_HEADER == b"\x13/multistream/1.0.0\n"


@given(st.integers(0, len(MULTISTREAM_HEADER)), st.binary(max_size=40), st.booleans())
def test_the_header_and_anything_after_it_pass(cut: int, rest: bytes, private: bool) -> None:
    assert first_bytes_problem(MULTISTREAM_HEADER[:cut], private=private) is None
    assert first_bytes_problem(MULTISTREAM_HEADER + rest, private=private) is None


@given(st.binary(min_size=1, max_size=64), st.booleans())
def test_anything_else_is_another_network(data: bytes, private: bool) -> None:
    problem = first_bytes_problem(data, private=private)
    if MULTISTREAM_HEADER.startswith(data[:len(MULTISTREAM_HEADER)]):
        assert problem is None
    else:
        assert problem is not None
        assert KEY_DIFFERS in problem or "older PeerLLM" in problem


def test_the_cause_is_named() -> None:
    junk = b"\x99" * 30
    assert "another key" in str(first_bytes_problem(junk, private=True))
    assert "probably in a private network" in str(first_bytes_problem(junk, private=False))
    old = OLD_PRELUDE_MAGIC + b"\x00" + bytes(32)
    assert "older PeerLLM (network prelude /peerllm/pnet/1)" in str(
        first_bytes_problem(old, private=False))
    assert "open network" in nonce_problem(MULTISTREAM_HEADER)
    assert "older PeerLLM" in nonce_problem(old[:24])
    assert "closed the connection right after the pnet nonce" in nonce_problem(b"")
