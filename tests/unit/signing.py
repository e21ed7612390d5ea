"""Ed25519 test doubles shared by the wire tests (the real peer-ID mapping lives in identity/)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def peer_id_of(pk: bytes) -> str:
    return "peer-" + pk.hex()[:16]


def verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
    except InvalidSignature:
        return False
    return True


class Signer:
    def __init__(self, seed: int) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.peer_id = peer_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


ALICE, MALLORY = Signer(1), Signer(2)
