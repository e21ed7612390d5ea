"""The tokens this node's issuer has issued: their claims (never the token), one file each.

``peerllm token list`` and ``GET /v1/tokens`` read it; ``revoke`` looks up a token's
expiry here so that its revocation record lives exactly as long as the token.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import AuthError
from ..identity import atomic_write
from .tokens import TOKEN_ID, TokenClaims, claims_from_map

logger = logging.getLogger(__name__)


class TokenLedger:
    """Issued tokens' claims in ``directory`` (``<data dir>/auth/tokens``)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def record(self, claims: TokenClaims) -> None:
        """Remember an issued token.

        Raises:
            OSError: the file could not be written.
        """
        atomic_write(self._dir / f"{claims.id}.json",
                     json.dumps(claims.to_claims(), indent=1).encode())

    def get(self, token_id: str) -> TokenClaims | None:
        if not TOKEN_ID.fullmatch(token_id):
            return None
        return self._read(self._dir / f"{token_id}.json")

    def all(self) -> list[TokenClaims]:
        """Every readable record, oldest first (an unreadable one is logged and skipped)."""
        try:
            names = sorted(n for n in os.listdir(self._dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        found = [c for n in names if (c := self._read(self._dir / n)) is not None]
        return sorted(found, key=lambda c: (c.issued_at, c.id))

    def _read(self, path: Path) -> TokenClaims | None:
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            return claims_from_map(data if isinstance(data, dict) else {})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AuthError) as exc:
            logger.warning("ignoring token record %s: %s", path, exc)
            return None
