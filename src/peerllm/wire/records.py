"""Signed DHT records (Kademlia values) for node records and name claims; pure.

Layout, signature and validation rules are specified in protocols/dht-records.md.
``open_record`` is what a libp2p namespaced validator calls for every ``/peerllm/...``
key; the clock (``now``) and the crypto (``verify``, ``peer_id_of``, ``sign``) are
parameters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..errors import ErrorCode, LocalProtocolError, RecordError, RemoteProtocolError
from ._fields import FieldError, MapReader, check_float, check_int
from .blob import parse_digest, prefixed_digest
from .framing import pack, unpack_map

NAMESPACE: Final = "peerllm"
"""First path segment of every record key; libp2p routes validation by it."""
NODE_KEY_PREFIX: Final = "/peerllm/n/"
NAME_KEY_PREFIX: Final = "/peerllm/name/"
MODEL_KEY_DOMAIN: Final = b"/peerllm/model/"
DIGEST_KEY_DOMAIN: Final = b"/peerllm/blob/"
MAX_KEY_BYTES: Final = 50
"""Remote py-libp2p peers reject FIND_NODE keys longer than this."""

RECORD_VERSION: Final = 1
MAX_RECORD_BYTES: Final = 8 * 1024
RECORD_DOMAIN: Final = b"peerllm/dht-record/v1\x00"
MAX_RECORD_TTL_S: Final = 24 * 3600.0
"""Records expiring further than this in the future are refused (clock-skew margin)."""

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
MAX_ID_LEN: Final = 256
MAX_ADDR_LEN: Final = 512
MAX_RECORD_ADDRS: Final = 32
MAX_RECORD_MODELS: Final = 64

Kind = Literal["node", "name"]

_NAME_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


def is_valid_name(name: object) -> bool:
    """True for a DNS label: 1-63 chars of ``[a-z0-9-]``, no leading/trailing hyphen."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


# ---------------------------------------------------------------- keys


def _hex32(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def node_record_key(peer_id: str) -> str:
    """DHT key of a peer's node record (43 bytes)."""
    return NODE_KEY_PREFIX + _hex32(peer_id.encode())


def name_record_key(name: str) -> str:
    """DHT key of the claim on ``name`` (46 bytes)."""
    return NAME_KEY_PREFIX + _hex32(name.encode())


def model_provider_key(model_id: str) -> str:
    """Hex sha2-256 multihash of ``/peerllm/model/<id>``, for provide/find_providers."""
    return "1220" + hashlib.sha256(MODEL_KEY_DOMAIN + model_id.encode()).hexdigest()


def digest_provider_key(digest: str) -> str:
    """Hex sha2-256 multihash of ``/peerllm/blob/sha256:<hex>``: who holds that file.

    Raises:
        ValueError: ``digest`` is not a sha256 digest.
    """
    canonical = parse_digest(digest).encode()
    return "1220" + hashlib.sha256(DIGEST_KEY_DOMAIN + canonical).hexdigest()


def provider_key(ref: str) -> str:
    """The provider key of a file digest (``sha256:``/``sha256-`` + 64 hex, as refs
    write one: wire.blob.prefixed_digest) or else of a model id."""
    digest = prefixed_digest(ref)
    return model_provider_key(ref) if digest is None else digest_provider_key(digest)


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    """Where a peer can be reached and what it serves (kind ``"node"``)."""

    peer_id: str
    node_id: str
    name: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NameClaim:
    """A peer's claim on a friendly name (kind ``"name"``)."""

    name: str
    peer_id: str
    node_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedRecord:
    """A record that passed ``open_record``: signed by ``body.peer_id``'s key, unexpired."""

    kind: Kind
    seq: int
    expires_at: float
    public_key: bytes
    body: NodeRecord | NameClaim
    signature: bytes


def record_signing_payload(
    kind: str, seq: int, expires_at: float, public_key: bytes, body: bytes
) -> bytes:
    """``RECORD_DOMAIN + msgpack([kind, seq, float64(expires_at), public_key, body])``.

    msgpack-python packs canonically: a fixarray of 5, ``kind`` as str, ``seq`` in
    its shortest uint form, ``expires_at`` always as float64, ``public_key`` and
    ``body`` as bin.
    """
    return RECORD_DOMAIN + pack([kind, seq, float(expires_at), public_key, body])


def _body_to_map(body: NodeRecord | NameClaim) -> dict[str, Any]:
    if isinstance(body, NodeRecord):
        return {
            "peer_id": body.peer_id,
            "node_id": body.node_id,
            "name": body.name,
            "addrs": list(body.addrs),
            "models": list(body.models),
        }
    return {"name": body.name, "peer_id": body.peer_id, "node_id": body.node_id}


def _body_from_map(kind: str, m: Any) -> NodeRecord | NameClaim:
    """Raises FieldError."""
    r = MapReader(m, "body")
    peer_id = r.get_str("peer_id", max_len=MAX_ID_LEN, min_len=1)
    node_id = r.get_str("node_id", max_len=MAX_ID_LEN, min_len=1)
    if kind == "node":
        return NodeRecord(
            peer_id=peer_id,
            node_id=node_id,
            name=r.get_str("name", max_len=MAX_ID_LEN, min_len=1),
            addrs=r.get_str_tuple("addrs", max_items=MAX_RECORD_ADDRS, max_len=MAX_ADDR_LEN),
            models=r.get_str_tuple("models", max_items=MAX_RECORD_MODELS, max_len=MAX_ID_LEN),
        )
    name = r.get_str("name", max_len=63, min_len=1)
    if not is_valid_name(name):
        raise FieldError("body.name", f"{name!r} is not a valid name (DNS label)")
    return NameClaim(name=name, peer_id=peer_id, node_id=node_id)


def seal_record(
    kind: Kind,
    body: NodeRecord | NameClaim,
    *,
    seq: int,
    expires_at: float,
    public_key: bytes,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """Sign ``body`` and return the DHT value bytes.

    Raises:
        LocalProtocolError: ``kind`` does not match ``body``, a field breaks the
            rules ``open_record`` applies, the key/signature length is wrong, or the
            value exceeds MAX_RECORD_BYTES (code FRAME_TOO_LARGE).
    """
    expected = NodeRecord if kind == "node" else NameClaim if kind == "name" else None
    if expected is None or not isinstance(body, expected):
        raise LocalProtocolError(f"record kind {kind!r} does not match {type(body).__name__}")
    body_map = _body_to_map(body)
    try:
        _body_from_map(kind, body_map)
        check_int(seq, "seq")
        exp = check_float(expires_at, "exp")
    except FieldError as exc:
        raise LocalProtocolError(f"refusing to seal an invalid record: {exc}") from exc
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise LocalProtocolError(f"public key must be {PUBLIC_KEY_BYTES} bytes")
    body_bytes = pack(body_map)
    signature = sign(record_signing_payload(kind, seq, exp, public_key, body_bytes))
    if len(signature) != SIGNATURE_BYTES:
        raise LocalProtocolError(f"signature must be {SIGNATURE_BYTES} bytes")
    value = pack(
        {
            "k": kind,
            "v": RECORD_VERSION,
            "seq": seq,
            "exp": exp,
            "pk": public_key,
            "body": body_bytes,
            "sig": signature,
        }
    )
    if len(value) > MAX_RECORD_BYTES:
        raise LocalProtocolError(
            f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    return value


def open_record(
    key: str,
    value: bytes,
    *,
    now: float,
    verify: Callable[[bytes, bytes, bytes], bool],
    peer_id_of: Callable[[bytes], str],
) -> SignedRecord:
    """Validate a DHT value stored under ``key`` and return it decoded.

    ``verify(public_key, message, signature)`` checks an Ed25519 signature;
    ``peer_id_of(public_key)`` derives the peer ID of a raw public key.

    Raises:
        RecordError: oversize, malformed, unknown kind or version, expired (or
            expiring implausibly far ahead), bad signature, key not owned by
            ``body.peer_id``, stored under the wrong key, or an invalid name.
    """
    if len(value) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        r = MapReader(unpack_map(bytes(value), what="record"))
        version = r.get_int("v")
        if version != RECORD_VERSION:
            raise RecordError(f"unsupported record version {version}")
        raw_kind = r.get_str("k", max_len=16)
        kind: Kind
        if raw_kind == "node":
            kind = "node"
        elif raw_kind == "name":
            kind = "name"
        else:
            raise RecordError(f"unknown record kind {raw_kind!r}")
        seq = r.get_int("seq")
        exp = r.get_float("exp")
        public_key = r.get_bytes("pk", size=PUBLIC_KEY_BYTES)
        body_bytes = r.get_bytes("body")
        signature = r.get_bytes("sig", size=SIGNATURE_BYTES)
    except (FieldError, RemoteProtocolError) as exc:
        raise RecordError(f"malformed record: {exc}") from exc
    if exp <= now:
        raise RecordError(f"record expired at {exp} (now {now})")
    if exp > now + MAX_RECORD_TTL_S:
        raise RecordError(f"record expires {exp - now:.0f} s ahead, over {MAX_RECORD_TTL_S} s")
    payload = record_signing_payload(kind, seq, exp, public_key, body_bytes)
    if not verify(public_key, payload, signature):
        raise RecordError("record signature does not verify")
    try:
        body = _body_from_map(kind, unpack_map(body_bytes, what="record body"))
    except (FieldError, RemoteProtocolError) as exc:
        raise RecordError(f"malformed record body: {exc}") from exc
    signer = peer_id_of(public_key)
    if signer != body.peer_id:
        raise RecordError(f"record for {body.peer_id} is signed by {signer}")
    expected_key = (
        node_record_key(body.peer_id)
        if isinstance(body, NodeRecord)
        else name_record_key(body.name)
    )
    if key != expected_key:
        raise RecordError(f"{kind} record stored under {key!r}, expected {expected_key!r}")
    return SignedRecord(
        kind=kind,
        seq=seq,
        expires_at=exp,
        public_key=public_key,
        body=body,
        signature=signature,
    )


def select_newest(records: Sequence[SignedRecord]) -> int:
    """Index of the newest record: highest seq, then latest expires_at, then lowest index.

    Raises:
        ValueError: ``records`` is empty.
    """
    if not records:
        raise ValueError("select_newest() needs at least one record")
    best = 0
    for i in range(1, len(records)):
        cand, top = records[i], records[best]
        if (cand.seq, cand.expires_at) > (top.seq, top.expires_at):
            best = i
    return best
