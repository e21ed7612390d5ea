"""Node identity: the Ed25519 key (= libp2p peer ID), node UUID and name, and their files."""

from __future__ import annotations

from .keys import generate_private_key as generate_private_key
from .keys import peer_id_of as peer_id_of
from .keys import public_key_bytes as public_key_bytes
from .keys import public_key_of as public_key_of
from .keys import sign as sign
from .keys import to_libp2p_keypair as to_libp2p_keypair
from .keys import verify as verify
from .keystore import KEY_FILE_NAME as KEY_FILE_NAME
from .keystore import atomic_write as atomic_write
from .keystore import load_or_create_key as load_or_create_key
from .names import generate_name as generate_name
from .names import validate_name as validate_name
from .profile import PROFILE_FILE_NAME as PROFILE_FILE_NAME
from .profile import Identity as Identity
from .profile import default_data_dir as default_data_dir
from .profile import load_identity as load_identity

__all__ = [
    "KEY_FILE_NAME",
    "PROFILE_FILE_NAME",
    "Identity",
    "atomic_write",
    "default_data_dir",
    "generate_name",
    "generate_private_key",
    "load_identity",
    "load_or_create_key",
    "peer_id_of",
    "public_key_bytes",
    "public_key_of",
    "sign",
    "to_libp2p_keypair",
    "validate_name",
    "verify",
]
