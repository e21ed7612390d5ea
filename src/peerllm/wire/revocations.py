"""The /peerllm/revocations/1.0.0 messages, sans-IO: batches of signed revocation records.

One message kind, ``records``: up to MAX_RECORDS_PER_FRAME record JWTs, each at most
MAX_RECORD_CHARS. The codec checks only sizes and types; what a record says (and whether
its signature holds) is auth/'s business, since a record is verified before it is kept
(protocols/auth.md, "Revocation protocol").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ErrorCode, RemoteProtocolError
from ._fields import FieldError, checked_as_sent, read_envelope
from .framing import encode_frame

PROTOCOL_ID: Final = "/peerllm/revocations/1.0.0"
PROTOCOL_VERSION: Final = 1
MAX_RECORDS_PER_FRAME: Final = 128
MAX_RECORD_CHARS: Final = 1024  # a revocation JWT of ours is ~430 characters
MAX_REVOCATION_FRAME_BYTES: Final = 192 * 1024
"""Frame cap: a full frame of the longest records (~131 KiB) fits with room."""
_KIND: Final = "records"


@dataclass(frozen=True, slots=True, kw_only=True)
class Records:
    """Revocation records, as JWT text (1..MAX_RECORDS_PER_FRAME of them)."""

    records: tuple[str, ...]


def message_to_map(msg: Records) -> dict[str, Any]:
    """The frame map of ``msg``.

    Raises:
        LocalProtocolError: ``msg`` breaks the receiver's rules (too many or too long
            records; a bug of ours, since ``batches`` makes frames that fit).
    """
    m = {"v": PROTOCOL_VERSION, "t": _KIND, "records": list(msg.records)}
    return checked_as_sent(m, message_from_map)


def message_from_map(m: Any) -> Records:
    """Decode one frame map of this protocol.

    Raises:
        RemoteProtocolError: UNSUPPORTED_VERSION for another ``v``, UNKNOWN_MESSAGE for
            another ``t``, BAD_FRAME for anything malformed (naming the field).
    """
    try:
        return _records(m)
    except FieldError as exc:
        raise RemoteProtocolError(f"revocations message: {exc}") from exc


def _records(m: Any) -> Records:
    r, kind = read_envelope(m, protocol="revocations", version=PROTOCOL_VERSION,
                            max_kind_len=64)
    if kind != _KIND:
        raise RemoteProtocolError(f"unknown revocations message type {kind!r}",
                                  code=ErrorCode.UNKNOWN_MESSAGE)
    records = r.get_str_tuple("records", max_items=MAX_RECORDS_PER_FRAME,
                              max_len=MAX_RECORD_CHARS)
    if not records:
        raise FieldError("records", "must hold at least one record")
    return Records(records=records)


def encode(msg: Records) -> bytes:
    """``msg`` as one frame (length prefix and msgpack body).

    Raises:
        LocalProtocolError: as ``message_to_map``.
    """
    return encode_frame(message_to_map(msg), max_frame_bytes=MAX_REVOCATION_FRAME_BYTES)


_BODY_BUDGET: Final = MAX_REVOCATION_FRAME_BYTES - 64  # the map's keys and headers
_STR_HEADER: Final = 5  # the longest msgpack str header


def batches(records: Sequence[str]) -> Iterator[Records]:
    """``records`` in as few frames as the limits allow, in order (records over
    MAX_RECORD_CHARS are left out: no receiver would take them)."""
    batch: list[str] = []
    size = 0
    for record in records:
        if not 0 < len(record) <= MAX_RECORD_CHARS:
            continue
        cost = len(record.encode()) + _STR_HEADER
        if batch and (len(batch) == MAX_RECORDS_PER_FRAME or size + cost > _BODY_BUDGET):
            yield Records(records=tuple(batch))
            batch, size = [], 0
        batch.append(record)
        size += cost
    if batch:
        yield Records(records=tuple(batch))
