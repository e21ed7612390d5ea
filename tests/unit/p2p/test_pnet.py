"""XSalsa20 as the pnet spec uses it (known vectors, any chunking), and NetworkKey."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.p2p.pnet import KEY_LEN, NONCE_LEN, NetworkKey, XSalsa20

GO_KEY = b"this is 32-byte key for xsalsa20"
GO_NONCE = b"24-byte nonce for xsalsa"


def test_go_x_crypto_xsalsa20_vectors() -> None:
    # golang.org/x/crypto/salsa20 salsa20_test.go, xSalsa20TestData.
    assert XSalsa20(GO_KEY, GO_NONCE).xor(b"Hello world!") == bytes.fromhex(
        "002d4513843fc240c401e541")
    assert XSalsa20(GO_KEY, GO_NONCE).xor(bytes(64)) == bytes.fromhex(
        "4848297feb1fb52fb66d81609bd547fabcbe7026edc8b5e5e449d088bfa69c08"
        "8f5d8da1d791267c2c195a7f8cae9c4b4050d08ce6d3a151ec265f3a58e47648")


def test_nacl_4_mib_keystream_vector() -> None:
    # naclcrypto-20090310.pdf §8 (NaCl tests/stream.c): SHA-256 of 4 MiB of keystream,
    # long enough to cross the 32-bit block counter's low word many times over.
    cipher = XSalsa20(
        bytes.fromhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389"),
        bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37"))
    digest = hashlib.sha256()
    for _ in range(64):
        digest.update(cipher.xor(bytes(65536)))
    assert digest.hexdigest() == (
        "662b9d0e3463029156069b12f918691a98f7dfb2ca0393c96bbfc6b1fbd630a2")


@given(st.binary(max_size=600), st.lists(st.integers(1, 97), max_size=12))
def test_the_keystream_does_not_depend_on_how_data_is_cut(data: bytes,
                                                           cuts: list[int]) -> None:
    whole = XSalsa20(GO_KEY, GO_NONCE).xor(data)
    cipher, pieces, at = XSalsa20(GO_KEY, GO_NONCE), [], 0
    for size in [*cuts, len(data)]:
        pieces.append(cipher.xor(data[at:at + size]))
        at += size
    assert b"".join(pieces) == whole
    assert XSalsa20(GO_KEY, GO_NONCE).xor(whole) == data


def test_wrong_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="32-byte key and a 24-byte nonce"):
        XSalsa20(GO_KEY[:16], GO_NONCE)
    with pytest.raises(ValueError, match="32-byte key and a 24-byte nonce"):
        XSalsa20(GO_KEY, GO_NONCE[:8])
    assert (KEY_LEN, NONCE_LEN) == (32, 24)


def test_network_key_describes_itself_without_the_secret() -> None:
    secret = "ab" * 32
    key = NetworkKey.from_hex(secret)
    assert key.key == bytes.fromhex(secret)
    assert NetworkKey.from_hex(None).describe() == "open"
    described = key.describe()
    assert described.startswith("private:") and len(described) == len("private:") + 8
    assert described != NetworkKey.from_hex("cd" * 32).describe()
    assert secret not in described and secret not in repr(key)
    with pytest.raises(ValueError, match="64 hex characters"):
        NetworkKey.from_hex("ab" * 16)
