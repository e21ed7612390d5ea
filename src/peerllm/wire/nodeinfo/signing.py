"""Signing and checking a NodeInfo response; the crypto itself is passed in as callbacks."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ..framing import pack, unpack_map
from .codec import info_from_map, info_to_map
from .messages import (
    MAX_INFO_BODY_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_DOMAIN,
    InfoResponse,
    NodeInfo,
)


def signing_payload(body: bytes) -> bytes:
    """The bytes a node signs: ``SIGNATURE_DOMAIN + body``."""
    return SIGNATURE_DOMAIN + body


def make_response(
    request_id: int, info: NodeInfo, *, public_key: bytes, sign: Callable[[bytes], bytes]
) -> InfoResponse:
    """Encode ``info``, sign it with ``sign`` and wrap it in an InfoResponse.

    Raises:
        LocalProtocolError: ``info`` breaks a field rule, its body exceeds
            MAX_INFO_BODY_BYTES (code FRAME_TOO_LARGE), or the key or signature has
            the wrong length.
    """
    m = info_to_map(info)
    try:
        info_from_map(m)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"refusing to send invalid NodeInfo: {exc}") from exc
    body = pack(m)
    if len(body) > MAX_INFO_BODY_BYTES:
        raise LocalProtocolError(
            f"NodeInfo body of {len(body)} bytes exceeds {MAX_INFO_BODY_BYTES}",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise LocalProtocolError(f"public key must be {PUBLIC_KEY_BYTES} bytes")
    signature = sign(signing_payload(body))
    if len(signature) != SIGNATURE_BYTES:
        raise LocalProtocolError(f"signature must be {SIGNATURE_BYTES} bytes")
    return InfoResponse(
        request_id=request_id, body=body, public_key=public_key, signature=signature
    )


def open_response(
    resp: InfoResponse,
    *,
    expected_peer_id: str,
    peer_id_of: Callable[[bytes], str],
    verify: Callable[[bytes, bytes, bytes], bool],
) -> NodeInfo:
    """Check that ``resp`` was signed by ``expected_peer_id`` and return its NodeInfo.

    ``peer_id_of(public_key)`` derives a peer ID from a raw public key;
    ``verify(public_key, message, signature)`` returns whether the signature holds.

    Raises:
        RemoteProtocolError(code=BAD_SIGNATURE): the key is not the expected peer's,
            the signature does not verify, or the signed NodeInfo names another peer.
        RemoteProtocolError(code=BAD_FRAME / FRAME_TOO_LARGE): the signed body is
            malformed or too large.
    """
    if len(resp.public_key) != PUBLIC_KEY_BYTES or len(resp.signature) != SIGNATURE_BYTES:
        raise RemoteProtocolError(
            "node-info key or signature has the wrong length", code=ErrorCode.BAD_SIGNATURE
        )
    if len(resp.body) > MAX_INFO_BODY_BYTES:
        raise RemoteProtocolError(
            f"node-info body exceeds {MAX_INFO_BODY_BYTES} bytes", code=ErrorCode.FRAME_TOO_LARGE
        )
    signer = peer_id_of(resp.public_key)
    if signer != expected_peer_id:
        raise RemoteProtocolError(
            f"node-info signed by {signer}, expected {expected_peer_id}",
            code=ErrorCode.BAD_SIGNATURE,
        )
    if not verify(resp.public_key, signing_payload(resp.body), resp.signature):
        raise RemoteProtocolError(
            "node-info signature does not verify", code=ErrorCode.BAD_SIGNATURE
        )
    info = info_from_map(unpack_map(resp.body, what="node-info body"))
    if info.peer_id != expected_peer_id:
        raise RemoteProtocolError(
            f"signed node-info names peer {info.peer_id}, expected {expected_peer_id}",
            code=ErrorCode.BAD_SIGNATURE,
        )
    return info
