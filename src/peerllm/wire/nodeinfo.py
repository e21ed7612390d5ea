"""Messages of the /peerllm/node-info/1.0.0 protocol: a signed, strictly typed NodeInfo.

Map forms follow protocols/node-info.md. Decoding is strict: every field must be
present with exactly the right type (``bool`` is not an ``int``; ``nil`` only where
the field is optional) and within its limits, and errors name the field path, e.g.
``resources.gpus[1].vram_free_bytes: expected int, got str``. Map keys this version
does not know are ignored, so later minor versions can add fields without breaking
older readers. Signing and key handling are callbacks; nothing here does crypto.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._fields import FieldError, MapReader
from .framing import pack, unpack_map

PROTOCOL_ID: Final = "/peerllm/node-info/1.0.0"
PROTOCOL_VERSION: Final = 1
MAX_INFO_FRAME_BYTES: Final = 64 * 1024
"""Frame cap for this protocol (both directions)."""
MAX_INFO_BODY_BYTES: Final = MAX_INFO_FRAME_BYTES - 1024
"""Cap on the signed NodeInfo body; the rest of the frame is envelope (< 200 bytes)."""
SIGNATURE_DOMAIN: Final = b"peerllm/node-info/v1\x00"

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
BOOT_NONCE_BYTES: Final = 16

MAX_ID_LEN: Final = 256
"""peer_id, node_id, name, software_version, location, model ids, GPU names, protocols."""
MAX_ADDR_LEN: Final = 512
MAX_TAG_LEN: Final = 64
"""Tags and feature names."""
MAX_MESSAGE_LEN: Final = 1024
MAX_ADDRS: Final = 64
MAX_MODELS: Final = 256
MAX_TAGS: Final = 32
MAX_GPUS: Final = 16
MAX_PROTOCOLS: Final = 64
MAX_FEATURES: Final = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Gpu:
    index: int
    name: str
    vram_total_bytes: int
    vram_free_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    cpu_cores: int
    ram_total_bytes: int
    ram_free_bytes: int
    gpus: tuple[Gpu, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    id: str
    loaded: bool
    context_size: int | None
    size_bytes: int | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    active: int
    queued: int
    capacity: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Performance:
    tokens_per_second: float | None
    ttft_ms: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    protocols: tuple[str, ...]
    features: tuple[str, ...]
    private_network: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """What a node says about itself; signed by its peer key when sent."""

    protocol_version: int
    software_version: str
    peer_id: str
    node_id: str
    name: str
    location: str | None
    tags: tuple[str, ...]
    boot_nonce: bytes
    """16 random bytes drawn at process start: a new value means the node restarted."""
    started_at: float
    """Unix time (s) the node process started."""
    issued_at: float
    """Unix time (s) this NodeInfo was produced."""
    seq: int
    """Increases with every NodeInfo produced under one boot_nonce."""
    addrs: tuple[str, ...]
    capabilities: Capabilities
    resources: Resources
    models: tuple[ModelInfo, ...]
    load: Load
    performance: Performance


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoRequest:
    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoResponse:
    request_id: int
    body: bytes
    """msgpack of ``info_to_map(info)``: exactly the bytes that were signed."""
    public_key: bytes
    """The signer's raw 32-byte Ed25519 public key."""
    signature: bytes
    """64-byte Ed25519 signature over ``signing_payload(body)``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse:
    request_id: int
    """The failed request's id, or 0 when the request could not be decoded."""
    code: int
    """An ``ErrorCode`` value; unknown values must be tolerated."""
    message: str


Message = InfoRequest | InfoResponse | ErrorResponse
_MESSAGE_TYPES: Final = frozenset({"info_req", "info", "error"})


# ---------------------------------------------------------------- NodeInfo <-> map


def info_to_map(info: NodeInfo) -> dict[str, Any]:
    """The map form of ``info`` (floats always encoded as floats)."""
    caps, res, load, perf = info.capabilities, info.resources, info.load, info.performance
    return {
        "protocol_version": info.protocol_version,
        "software_version": info.software_version,
        "peer_id": info.peer_id,
        "node_id": info.node_id,
        "name": info.name,
        "location": info.location,
        "tags": list(info.tags),
        "boot_nonce": info.boot_nonce,
        "started_at": float(info.started_at),
        "issued_at": float(info.issued_at),
        "seq": info.seq,
        "addrs": list(info.addrs),
        "capabilities": {
            "protocols": list(caps.protocols),
            "features": list(caps.features),
            "private_network": caps.private_network,
        },
        "resources": {
            "cpu_cores": res.cpu_cores,
            "ram_total_bytes": res.ram_total_bytes,
            "ram_free_bytes": res.ram_free_bytes,
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "vram_total_bytes": g.vram_total_bytes,
                    "vram_free_bytes": g.vram_free_bytes,
                }
                for g in res.gpus
            ],
        },
        "models": [
            {
                "id": m.id,
                "loaded": m.loaded,
                "context_size": m.context_size,
                "size_bytes": m.size_bytes,
                "tags": list(m.tags),
            }
            for m in info.models
        ],
        "load": {"active": load.active, "queued": load.queued, "capacity": load.capacity},
        "performance": {
            "tokens_per_second": _opt_float(perf.tokens_per_second),
            "ttft_ms": _opt_float(perf.ttft_ms),
        },
    }


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def info_from_map(m: Any) -> NodeInfo:
    """Decode and validate a NodeInfo map (see the module docstring for the rules).

    Raises:
        RemoteProtocolError(code=BAD_FRAME): a field is missing, mistyped or out of
            range; the message starts with the field path.
    """
    try:
        return _info_from_reader(MapReader(m))
    except FieldError as exc:
        raise RemoteProtocolError(f"node-info: {exc}") from exc


def _info_from_reader(r: MapReader) -> NodeInfo:
    caps = r.get_map("capabilities")
    res = r.get_map("resources")
    load = r.get_map("load")
    perf = r.get_map("performance")
    return NodeInfo(
        protocol_version=r.get_int("protocol_version"),
        software_version=r.get_str("software_version", max_len=MAX_ID_LEN, min_len=1),
        peer_id=r.get_str("peer_id", max_len=MAX_ID_LEN, min_len=1),
        node_id=r.get_str("node_id", max_len=MAX_ID_LEN, min_len=1),
        name=r.get_str("name", max_len=MAX_ID_LEN, min_len=1),
        location=r.get_opt_str("location", max_len=MAX_ID_LEN),
        tags=r.get_str_tuple("tags", max_items=MAX_TAGS, max_len=MAX_TAG_LEN),
        boot_nonce=r.get_bytes("boot_nonce", size=BOOT_NONCE_BYTES),
        started_at=r.get_float("started_at"),
        issued_at=r.get_float("issued_at"),
        seq=r.get_int("seq"),
        addrs=r.get_str_tuple("addrs", max_items=MAX_ADDRS, max_len=MAX_ADDR_LEN),
        capabilities=Capabilities(
            protocols=caps.get_str_tuple("protocols", max_items=MAX_PROTOCOLS, max_len=MAX_ID_LEN),
            features=caps.get_str_tuple("features", max_items=MAX_FEATURES, max_len=MAX_TAG_LEN),
            private_network=caps.get_bool("private_network"),
        ),
        resources=Resources(
            cpu_cores=res.get_int("cpu_cores"),
            ram_total_bytes=res.get_int("ram_total_bytes"),
            ram_free_bytes=res.get_int("ram_free_bytes"),
            gpus=tuple(
                Gpu(
                    index=g.get_int("index"),
                    name=g.get_str("name", max_len=MAX_ID_LEN),
                    vram_total_bytes=g.get_int("vram_total_bytes"),
                    vram_free_bytes=g.get_int("vram_free_bytes"),
                )
                for g in res.get_map_list("gpus", max_items=MAX_GPUS)
            ),
        ),
        models=tuple(
            ModelInfo(
                id=mr.get_str("id", max_len=MAX_ID_LEN, min_len=1),
                loaded=mr.get_bool("loaded"),
                context_size=mr.get_opt_int("context_size"),
                size_bytes=mr.get_opt_int("size_bytes"),
                tags=mr.get_str_tuple("tags", max_items=MAX_TAGS, max_len=MAX_TAG_LEN),
            )
            for mr in r.get_map_list("models", max_items=MAX_MODELS)
        ),
        load=Load(
            active=load.get_int("active"),
            queued=load.get_int("queued"),
            capacity=load.get_int("capacity"),
        ),
        performance=Performance(
            tokens_per_second=perf.get_opt_float("tokens_per_second"),
            ttft_ms=perf.get_opt_float("ttft_ms"),
        ),
    )


# ---------------------------------------------------------------- messages <-> maps


def message_to_map(msg: Message) -> dict[str, Any]:
    """The frame map of ``msg``, checked against the same rules the receiver applies.

    Raises:
        LocalProtocolError: ``msg`` would be rejected by a conforming receiver.
    """
    m: dict[str, Any]
    if isinstance(msg, InfoRequest):
        m = {"t": "info_req", "v": PROTOCOL_VERSION, "id": msg.request_id}
    elif isinstance(msg, InfoResponse):
        m = {
            "t": "info",
            "v": PROTOCOL_VERSION,
            "id": msg.request_id,
            "body": msg.body,
            "pk": msg.public_key,
            "sig": msg.signature,
        }
    elif isinstance(msg, ErrorResponse):
        m = {
            "t": "error",
            "v": PROTOCOL_VERSION,
            "id": msg.request_id,
            "code": msg.code,
            "msg": msg.message,
        }
    else:
        raise LocalProtocolError(
            f"not a node-info message: {type(msg).__name__}", code=ErrorCode.UNKNOWN_MESSAGE
        )
    try:
        message_from_map(m)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc), code=exc.code) from exc
    return m


def message_from_map(m: Any) -> Message:
    """Decode one frame map of this protocol.

    Raises:
        RemoteProtocolError: code UNSUPPORTED_VERSION if ``v`` is not 1,
            UNKNOWN_MESSAGE for an unknown ``t``, BAD_FRAME for anything else
            malformed, FRAME_TOO_LARGE for an oversize body.
    """
    try:
        r = MapReader(m)
        version = r.get_int("v")
        if version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"node-info version {version} is not supported", code=ErrorCode.UNSUPPORTED_VERSION
            )
        kind = r.get_str("t", max_len=MAX_TAG_LEN)
        if kind not in _MESSAGE_TYPES:
            raise RemoteProtocolError(
                f"unknown node-info message type {kind!r}", code=ErrorCode.UNKNOWN_MESSAGE
            )
        request_id = r.get_int("id")
        if kind == "info_req":
            return InfoRequest(request_id=request_id)
        if kind == "info":
            body = r.get_bytes("body")
            if len(body) > MAX_INFO_BODY_BYTES:
                raise RemoteProtocolError(
                    f"node-info body of {len(body)} bytes exceeds {MAX_INFO_BODY_BYTES}",
                    code=ErrorCode.FRAME_TOO_LARGE,
                )
            return InfoResponse(
                request_id=request_id,
                body=body,
                public_key=r.get_bytes("pk", size=PUBLIC_KEY_BYTES),
                signature=r.get_bytes("sig", size=SIGNATURE_BYTES),
            )
        return ErrorResponse(
            request_id=request_id,
            code=r.get_int("code"),
            message=r.get_str("msg", max_len=MAX_MESSAGE_LEN),
        )
    except FieldError as exc:
        raise RemoteProtocolError(f"node-info message: {exc}") from exc


# ---------------------------------------------------------------- signing


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
