"""Version pins in model ids: ``id@<hex prefix of the file's sha256 digest>``; pure.

``gemma@1a2b3c4d`` names the model ``gemma`` only while the file it serves has a digest
starting with those hex digits (PIN_MIN_HEX..64 of them). Model ids never contain ``@``,
so the split is unambiguous. The registry resolves pins (inference/versions.py); the
router uses the same rule to pick only the nodes that serve that version.
"""

from __future__ import annotations

import re
from typing import Final

PIN_SEPARATOR: Final = "@"
PIN_MIN_HEX: Final = 8
DIGEST_PREFIX: Final = "sha256:"  # the canonical digest form (wire.blob.parse_digest's)
_PIN: Final = re.compile(rf"[0-9a-fA-F]{{{PIN_MIN_HEX},64}}")


def split_pin(text: str) -> tuple[str, str | None]:
    """``(id, None)`` or ``(id, lowercase hex pin)``.

    Raises:
        ValueError: the part after ``@`` is not PIN_MIN_HEX..64 hex digits (the message
            says what a pin looks like).
    """
    model_id, sep, pin = text.partition(PIN_SEPARATOR)
    if not sep:
        return text, None
    if not _PIN.fullmatch(pin):
        raise ValueError(f"{pin[:80]!r} is not a version pin; pin a model as id@<at least "
                         f"{PIN_MIN_HEX} hex digits of its sha256 digest>")
    return model_id, pin.lower()


def pin_matches(pin: str, digest: str | None) -> bool:
    """True when ``digest`` (canonical ``sha256:<64 lowercase hex>``) starts with the hex
    ``pin``."""
    return digest is not None and digest.startswith(DIGEST_PREFIX + pin)
