"""Issuer ids: an issuer's Ed25519 public key as text (``ed25519:<base64url>``), and back.

One issuer id names one signing key. It is what ``peerllm auth issuer`` prints, what
``--trust-issuer`` takes, and the ``iss`` and ``kid`` of every token the key signs.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final, NewType

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..config.auth import ISSUER_ID_PATTERN

IssuerId = NewType("IssuerId", str)
PREFIX: Final = "ed25519:"
MAX_ISSUER_ID_LEN: Final = 64
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def issuer_id_of(key: Ed25519PrivateKey | Ed25519PublicKey) -> IssuerId:
    """The issuer id of a key (either half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes_raw()
    return IssuerId(PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode())


def parse_issuer_id(text: str) -> IssuerId:
    """Normalise an issuer id given by a user: ``ed25519:<43 base64url chars>`` or the
    32-byte public key as 64 hex characters.

    Raises:
        ValueError: anything else; the message shows the expected form.
    """
    value = text.strip()
    if ISSUER_ID_PATTERN.fullmatch(value):
        if not value.startswith(PREFIX):  # the hex form
            return issuer_id_of(Ed25519PublicKey.from_public_bytes(bytes.fromhex(value)))
        public_key(IssuerId(value))  # a curve point, or ValueError
        return IssuerId(value)
    shown = value if len(value) <= MAX_ISSUER_ID_LEN else value[:MAX_ISSUER_ID_LEN] + "…"
    raise ValueError(f"{shown!r} is not an issuer id; expected 'ed25519:' and 43 base64url "
                     "characters (what `peerllm auth issuer` prints) or 64 hex characters")


def public_key(issuer: IssuerId) -> Ed25519PublicKey:
    """The public key an issuer id names.

    Raises:
        ValueError: ``issuer`` is not a well-formed issuer id.
    """
    body = issuer[len(PREFIX):] if issuer.startswith(PREFIX) else ""
    if not _B64URL.fullmatch(body):
        raise ValueError("not an issuer id")
    try:
        raw = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not an issuer id") from exc
    return Ed25519PublicKey.from_public_bytes(raw)
