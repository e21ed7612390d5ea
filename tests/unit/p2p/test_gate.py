"""The network gate's prelude decision (pure part of p2p/gate.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.p2p.gate import MAGIC, PRELUDE_LEN, GateRefused, NetworkKey, check_prelude

OPEN = NetworkKey(None)
K1 = NetworkKey.from_hex("11" * 32)
K2 = NetworkKey.from_hex("22" * 32)


def test_same_network_passes() -> None:
    check_prelude(OPEN, OPEN.prelude())
    check_prelude(K1, K1.prelude())
    assert len(K1.prelude()) == PRELUDE_LEN


@pytest.mark.parametrize(("ours", "theirs"), [(K1, K2), (K1, OPEN), (OPEN, K1)])
def test_different_network_is_a_mismatch(ours: NetworkKey, theirs: NetworkKey) -> None:
    with pytest.raises(GateRefused) as info:
        check_prelude(ours, theirs.prelude())
    assert info.value.mismatch
    assert "network key differs" in info.value.reason


def test_fingerprint_does_not_contain_the_key() -> None:
    key = bytes.fromhex("11" * 32)
    assert key not in K1.prelude()
    assert K1.describe().startswith("private:")
    assert OPEN.describe() == "open"


def test_bad_key_text_is_rejected() -> None:
    with pytest.raises(ValueError, match="64 hex"):
        NetworkKey.from_hex("ab" * 16)


@given(st.binary(max_size=PRELUDE_LEN + 8))
def test_garbage_is_refused_not_crashed(data: bytes) -> None:
    if data == OPEN.prelude():
        return
    with pytest.raises(GateRefused) as info:
        check_prelude(OPEN, data)
    assert info.value.mismatch == (data.startswith(MAGIC) and len(data) == PRELUDE_LEN
                                   and data[len(MAGIC)] in (0, 1))
