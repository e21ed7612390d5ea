"""Ed25519 key helpers: generate, sign, verify and derive the libp2p peer ID (no file I/O)."""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from libp2p.crypto import ed25519 as libp2p_ed25519
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from .._types import PeerId

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64


def generate_private_key() -> Ed25519PrivateKey:
    """Return a new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """Return the 32 raw bytes of ``key``'s public half (what peers see and verify with)."""
    return key.public_key().public_bytes_raw()


def peer_id_of(public_key: bytes) -> PeerId:
    """Return the libp2p peer ID (base58, ``12D3KooW...``) of a raw Ed25519 public key.

    Computed by libp2p itself (``ID.from_pubkey``), so it always equals the ID the libp2p
    host reports for the same key.

    Raises:
        ValueError: ``public_key`` is not exactly 32 bytes.
    """
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_BYTES:
        size = len(public_key) if isinstance(public_key, bytes | bytearray) else "not bytes"
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {size}")
    libp2p_key = libp2p_ed25519.Ed25519PublicKey.from_bytes(bytes(public_key))
    return PeerId(str(ID.from_pubkey(libp2p_key).to_base58()))


def public_key_of(peer_id: str) -> bytes:
    """Return the raw Ed25519 public key an Ed25519 peer ID embeds (the inverse of
    ``peer_id_of``: such IDs are identity multihashes of the key, not hashes).

    Peer IDs come from peers, so this is strict and never returns a key that does not
    map back to exactly ``peer_id``.

    Raises:
        ValueError: ``peer_id`` is not base58, not an identity multihash, or not an
            Ed25519 key's.
    """
    try:
        key = ID.from_base58(peer_id).extract_public_key() if isinstance(peer_id, str) \
            else None
    except ValueError as exc:
        raise ValueError("not a base58 peer ID") from exc
    raw = key.to_bytes() if isinstance(key, libp2p_ed25519.Ed25519PublicKey) else b""
    if len(raw) != PUBLIC_KEY_BYTES or peer_id_of(raw) != peer_id:
        raise ValueError("not the peer ID of an Ed25519 key")
    return raw


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of ``message``."""
    return key.sign(message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` is ``public_key``'s signature of ``message``.

    Input comes from peers, so anything malformed (wrong lengths, wrong types, a key
    that is not a curve point) gives ``False``; this function never raises.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def to_libp2p_keypair(key: Ed25519PrivateKey) -> KeyPair:
    """Return the libp2p key pair for ``key`` (same seed), so the host has the same peer ID."""
    seed = key.private_bytes_raw()
    return libp2p_ed25519.create_new_key_pair(seed)
