"""Receipts: what a serving node signs that it served for the peer that forwarded a request.

The serving node signs each receipt with its libp2p node key and sends it in the infer
``done`` frame; the forwarding node checks it against the peer it talked to and the
counts of that frame, and both keep it (auth/usage.py), so either side can later prove
the count. Format: protocols/auth.md, "Receipts".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .delegation import MAX_DELEGATION_CHARS, peer_key
from .jws import decode, encode, refuse
from .reasons import Reason
from .tokens import TOKEN_ID

RECEIPT_TYP: Final = "peerllm-receipt"
_MAX_COUNT: Final = 2**53  # JSON numbers stay exact below this
_MAX_TEXT: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """One served request. ``gen_s`` is the serving engine's wall time for it (from
    admission to done, queue and model load included), not CPU time."""

    server: str  # iss: the serving node's peer ID
    client: str  # aud: the forwarding node's peer ID
    id: str  # jti
    request_id: int  # rid: the infer request id the client chose
    subject: str
    token_id: str | None  # tid: the user's token id; None for an anonymous caller
    model: str
    tokens_in: int  # prompt tokens
    tokens_out: int  # completion tokens
    gen_s: float
    issued_at: int

    def to_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.server, "aud": self.client, "jti": self.id, "rid": self.request_id,
            "sub": self.subject, "model": self.model, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "gen_s": self.gen_s, "iat": self.issued_at}
        if self.token_id is not None:
            claims["tid"] = self.token_id
        return claims


def make_receipt(node_key: Ed25519PrivateKey, receipt: Receipt) -> str:
    """``receipt`` signed with the serving node's key (``receipt.server`` is its peer ID)."""
    return encode(node_key, receipt.to_claims(), typ=RECEIPT_TYP, kid=receipt.server)


def read_receipt(text: str, *, server: str, client: str) -> Receipt:
    """Verify a receipt that ``server`` sent to ``client`` (us).

    Times are not checked: a receipt is a record of the past, kept as proof.

    Raises:
        AuthError: forged (not signed by ``server``'s node key) or malformed (another
            audience or issuer, a missing or mistyped claim).
    """
    claims = decode(text, peer_key(server), typ=RECEIPT_TYP, what="receipt", audience=client,
                    max_chars=MAX_DELEGATION_CHARS)
    try:
        return _from_claims(claims, server=server, client=client)
    except (TypeError, ValueError) as exc:
        raise refuse(Reason.MALFORMED, f"the receipt's claims are malformed ({exc})") from exc


def _from_claims(c: dict[str, Any], *, server: str, client: str) -> Receipt:
    if c.get("iss") != server:
        raise ValueError("'iss' is not the peer that sent it")
    tid = c.get("tid")
    if tid is not None and not (isinstance(tid, str) and TOKEN_ID.fullmatch(tid)):
        raise ValueError("'tid' is not a token id")
    jti = c.get("jti")
    if not isinstance(jti, str) or not TOKEN_ID.fullmatch(jti):
        raise ValueError("'jti' is not an id")
    gen_s = c.get("gen_s")
    if not isinstance(gen_s, int | float) or isinstance(gen_s, bool) \
            or not math.isfinite(gen_s) or gen_s < 0:
        raise ValueError("'gen_s' must be a number >= 0")
    return Receipt(server=server, client=client, id=jti, request_id=_count(c, "rid"),
                   subject=_text(c, "sub"), token_id=tid, model=_text(c, "model"),
                   tokens_in=_count(c, "tokens_in"), tokens_out=_count(c, "tokens_out"),
                   gen_s=float(gen_s), issued_at=_count(c, "iat"))


def _count(c: dict[str, Any], key: str) -> int:
    value = c.get(key)
    if type(value) is not int or not 0 <= value < _MAX_COUNT:
        raise ValueError(f"{key!r} must be an integer >= 0")
    return value


def _text(c: dict[str, Any], key: str) -> str:
    value = c.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise ValueError(f"{key!r} must be 1-{_MAX_TEXT} characters")
    return value

