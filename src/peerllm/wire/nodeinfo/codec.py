"""NodeInfo and node-info messages to and from maps, decoded strictly.

Every field must be present with exactly the right type (``bool`` is not an ``int``;
``nil`` only where the field is optional) and within its limits, and errors name the
field path, e.g. ``resources.gpus[1].vram_free_bytes: expected int, got str``. Map keys
this version does not know are ignored, so later minor versions can add fields without
breaking older readers.
"""

from __future__ import annotations

from typing import Any, Final

from ...errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .._fields import (
    INT64_MAX,
    FieldError,
    MapReader,
    check_bytes,
    checked_as_sent,
    read_envelope,
)
from ..blob import parse_digest
from ..load import load_to_map, read_load
from ..prefixes import MAX_PREFIXES, PREFIX_DIGEST_BYTES
from .messages import (
    BOOT_NONCE_BYTES,
    MAX_ADDR_LEN,
    MAX_ADDRS,
    MAX_FEATURES,
    MAX_GPUS,
    MAX_ID_LEN,
    MAX_INFO_BODY_BYTES,
    MAX_MESSAGE_LEN,
    MAX_MODELS,
    MAX_PROTOCOLS,
    MAX_REPLICAS,
    MAX_TAG_LEN,
    MAX_TAGS,
    PROTOCOL_VERSION,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Capabilities,
    ErrorResponse,
    Gpu,
    InfoRequest,
    InfoResponse,
    Message,
    ModelInfo,
    NodeInfo,
    Performance,
    Resources,
)

_MESSAGE_TYPES: Final = frozenset({"info_req", "info", "error"})
DIGEST_TEXT_LEN: Final = 71  # "sha256:" + 64 hex digits

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
                "file_bytes": m.file_bytes,
                "digest": m.digest,
                "replicas": m.replicas,
                "prefixes": list(m.prefixes),
            }
            for m in info.models
        ],
        "load": load_to_map(load),
        "performance": {
            "tokens_per_second": _opt_float(perf.tokens_per_second),
            "ttft_ms": _opt_float(perf.ttft_ms),
        },
    }


def _added_digest(r: MapReader, key: str) -> str | None:
    """An optional ``sha256:<64 hex>`` added in 1.x: absent or nil reads as None."""
    if not r.has(key):
        return None
    text = r.get_opt_str(key, max_len=DIGEST_TEXT_LEN)
    if text is None:
        return None
    try:
        canonical = parse_digest(text)
    except ValueError as exc:
        raise FieldError(r.child_path(key), str(exc)) from exc
    if canonical != text:
        raise FieldError(r.child_path(key), "expected sha256:<64 lowercase hex digits>")
    return text


def _added_int(r: MapReader, key: str, *, hi: int) -> int:
    """A uint 0..``hi`` added in 1.x: absent reads as 0."""
    return r.get_int(key, hi=hi) if r.has(key) else 0


def _added_prefixes(r: MapReader, key: str) -> tuple[bytes, ...]:
    """Conversation digests added in 1.x: absent reads as (); each exactly
    PREFIX_DIGEST_BYTES, at most MAX_PREFIXES, no repeats."""
    if not r.has(key):
        return ()
    out = tuple(check_bytes(item, path, size=PREFIX_DIGEST_BYTES)
                for item, path in r.get_list(key, max_items=MAX_PREFIXES))
    if len(set(out)) != len(out):
        raise FieldError(r.child_path(key), "a digest is listed twice")
    return out


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
                file_bytes=mr.get_added_opt_int("file_bytes"),
                digest=_added_digest(mr, "digest"),
                replicas=_added_int(mr, "replicas", hi=MAX_REPLICAS),
                prefixes=_added_prefixes(mr, "prefixes"),
            )
            for mr in r.get_map_list("models", max_items=MAX_MODELS)
        ),
        load=read_load(load, max_count=INT64_MAX),
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
    return checked_as_sent(m, message_from_map)


def message_from_map(m: Any) -> Message:
    """Decode one frame map of this protocol.

    Raises:
        RemoteProtocolError: code UNSUPPORTED_VERSION if ``v`` is not 1,
            UNKNOWN_MESSAGE for an unknown ``t``, BAD_FRAME for anything else
            malformed, FRAME_TOO_LARGE for an oversize body.
    """
    try:
        r, kind = read_envelope(m, protocol="node-info", version=PROTOCOL_VERSION,
                                max_kind_len=MAX_TAG_LEN)
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

