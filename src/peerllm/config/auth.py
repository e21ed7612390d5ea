"""Section ``auth`` of NodeConfig: who may use this node's HTTP API (see protocols/auth.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from .validate import boolean, opt_path, set_field, str_tuple

ISSUER_ID_PATTERN: Final = re.compile(r"ed25519:[A-Za-z0-9_-]{43}|[0-9a-fA-F]{64}")
"""An issuer id as users write it: ``ed25519:`` + base64url key, or the key in hex."""


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """Section ``auth``: tokens, trusted issuers and what an unauthenticated caller gets."""

    required: bool = False  # every API request needs a valid token (--require-auth)
    trusted_issuers: tuple[str, ...] = ()  # besides our own issuer (--trust-issuer)
    insecure_no_auth: bool = False  # allow a non-loopback API without auth (warned)
    issuer_key_file: Path | None = None  # None = <data dir>/issuer.key

    def __post_init__(self) -> None:
        set_field(self, "required", boolean("auth.required", self.required))
        set_field(self, "insecure_no_auth",
                  boolean("auth.insecure_no_auth", self.insecure_no_auth))
        issuers = str_tuple("auth.trusted_issuers", self.trusted_issuers)
        for issuer in issuers:
            if not ISSUER_ID_PATTERN.fullmatch(issuer):
                raise ConfigError("auth.trusted_issuers",
                                  f"{issuer[:64]!r} is not an issuer id; expected what "
                                  "`peerllm auth issuer` prints (ed25519:...)")
        set_field(self, "trusted_issuers", issuers)
        set_field(self, "issuer_key_file", opt_path("auth.issuer_key_file",
                                                    self.issuer_key_file))
