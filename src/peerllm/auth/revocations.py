"""Revocations: records signed by a token's issuer that every node trusting it honours.

A revocation is a JWT (``typ: peerllm-revocation``) signed by the issuer key that signed
the token, naming the token id (``rev``) and how long the record matters (``exp``: the
token's own expiry, after which the token is dead anyway). Records are kept one file
each in the data dir (so a restart honours them, and ``peerllm token revoke`` can add
one while the node runs: the node rescans the folder), and spread to peers by the
revocation protocol (protocols/auth.md). Only records of trusted issuers are kept or
passed on: a peer cannot fill our disk with records of keys it made up.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import AuthError
from ..identity import atomic_write
from .issuers import IssuerId, issuer_id_of, public_key
from .jws import check_times, decode, encode, refuse, unverified_header
from .reasons import Reason
from .tokens import TOKEN_ID

logger = logging.getLogger(__name__)

REVOCATION_TYP: Final = "peerllm-revocation"
MAX_RECORDS: Final = 10_000
MAX_RECORD_LIFETIME_S: Final = 400 * 86400  # longest token TTL we honour a record for


@dataclass(frozen=True, slots=True)
class Revocation:
    issuer: IssuerId
    token_id: str
    issued_at: int
    expires_at: int
    record: str  # the signed JWT, as received or made


def make_revocation(issuer: Ed25519PrivateKey, token_id: str, *, now: int, until: int) -> str:
    """A signed record revoking ``token_id`` until ``until`` (the token's expiry)."""
    iss = issuer_id_of(issuer)
    return encode(issuer, {"iss": iss, "rev": token_id, "iat": now,
                           "exp": max(until, now + 1)}, typ=REVOCATION_TYP, kid=iss)


def read_revocation(record: str, *, now: float) -> Revocation:
    """Verify a revocation record (signature by its own issuer, shape, times).

    Raises:
        AuthError: malformed, forged or expired.
    """
    header = unverified_header(record, what="revocation")
    kid = header.get("kid")
    try:
        key = public_key(IssuerId(kid)) if isinstance(kid, str) else None
    except ValueError:
        key = None
    if key is None:
        raise refuse(Reason.MALFORMED, "the revocation's 'kid' is not an issuer id")
    claims = decode(record, key, typ=REVOCATION_TYP, what="revocation")
    rev = claims.get("rev")
    if claims.get("iss") != kid or not isinstance(rev, str) or not TOKEN_ID.fullmatch(rev):
        raise refuse(Reason.MALFORMED, "the revocation needs 'iss' = 'kid' and a token id")
    iat, exp = check_times(claims, now=now, what="revocation")
    if exp - iat > MAX_RECORD_LIFETIME_S:
        raise refuse(Reason.MALFORMED, "the revocation lives longer than any token")
    return Revocation(issuer=IssuerId(str(kid)), token_id=rev, issued_at=iat, expires_at=exp,
                      record=record)


def _file_name(issuer: str, token_id: str) -> str:
    return f"{hashlib.sha256(issuer.encode()).hexdigest()[:16]}-{token_id}.jwt"


class RevocationBook:
    """The revocations this node honours: in memory, mirrored in ``directory``."""

    def __init__(self, directory: Path | None, *, trusted: Collection[IssuerId]) -> None:
        self._dir = directory
        self._trusted = frozenset(trusted)
        self._by_key: dict[tuple[str, str], Revocation] = {}
        self._seen_files: set[str] = set()
        self.version = 0  # bumped whenever a record is added (gossip compares it)

    def is_revoked(self, issuer: str, token_id: str) -> bool:
        return (issuer, token_id) in self._by_key

    def records(self) -> list[str]:
        return [r.record for r in self._by_key.values()]

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, record: str, *, now: float, persist: bool = True) -> Revocation | None:
        """Honour ``record`` from now on; None if it was known already.

        Raises:
            AuthError: the record does not verify, or its issuer is not trusted here
                (reason untrusted_issuer), or the book is full.
        """
        rev = read_revocation(record, now=now)
        if rev.issuer not in self._trusted:
            raise refuse(Reason.UNTRUSTED_ISSUER, "a revocation by an issuer this node "
                         "does not trust")
        key = (rev.issuer, rev.token_id)
        if key in self._by_key:
            return None
        if len(self._by_key) >= MAX_RECORDS:
            self.prune(now)
            if len(self._by_key) >= MAX_RECORDS:
                raise refuse(Reason.MALFORMED, f"over {MAX_RECORDS} live revocations")
        self._by_key[key] = rev
        self.version += 1
        if persist and self._dir is not None:
            name = _file_name(rev.issuer, rev.token_id)
            try:
                atomic_write(self._dir / name, record.encode())
                self._seen_files.add(name)
            except OSError as exc:  # still honoured in memory; said loudly
                logger.error("cannot save revocation of token %s in %s: %s", rev.token_id,
                             self._dir, exc)
        return rev

    def revoke(self, issuer: Ed25519PrivateKey, token_id: str, *, now: int, until: int
               ) -> Revocation:
        """Revoke one of our own issuer's tokens (the CLI and the admin API call this)."""
        record = make_revocation(issuer, token_id, now=now, until=until)
        return self.add(record, now=now) or self._by_key[(issuer_id_of(issuer), token_id)]

    def rescan(self, *, now: float) -> list[Revocation]:
        """Read records added to the folder by someone else (``peerllm token revoke``)."""
        if self._dir is None:
            return []
        try:
            names = {n for n in os.listdir(self._dir) if n.endswith(".jwt")}
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("cannot list revocations in %s: %s", self._dir, exc)
            return []
        added: list[Revocation] = []
        for name in sorted(names - self._seen_files):
            self._seen_files.add(name)
            try:
                record = (self._dir / name).read_text(encoding="ascii").strip()
                rev = self.add(record, now=now, persist=False)
            except (OSError, UnicodeDecodeError, AuthError) as exc:
                logger.warning("ignoring revocation file %s: %s", self._dir / name, exc)
                continue
            if rev is not None:
                added.append(rev)
        return added

    def prune(self, now: float) -> None:
        """Forget records whose tokens have expired anyway (and their files)."""
        for key, rev in list(self._by_key.items()):
            if rev.expires_at <= now:
                del self._by_key[key]
                if self._dir is not None:
                    name = _file_name(*key)
                    self._seen_files.discard(name)
                    try:
                        (self._dir / name).unlink(missing_ok=True)
                    except OSError as exc:
                        logger.debug("cannot remove %s: %s", name, exc)
