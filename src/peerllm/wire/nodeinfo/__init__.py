"""The /peerllm/node-info/1.0.0 protocol: a signed, strictly typed NodeInfo (sans-IO).

``messages`` holds the dataclasses and limits, ``codec`` the strict map forms
(protocols/node-info.md) and ``signing`` the signed envelope; signing and key handling
are callbacks, nothing here does crypto. Import the names from here:
``from peerllm.wire import nodeinfo as wni``.
"""

from __future__ import annotations

from ..load import Load
from .codec import (
    info_from_map,
    info_to_map,
    message_from_map,
    message_to_map,
)
from .messages import (
    BOOT_NONCE_BYTES,
    MAX_ADDR_LEN,
    MAX_ADDRS,
    MAX_FEATURES,
    MAX_GPUS,
    MAX_ID_LEN,
    MAX_INFO_BODY_BYTES,
    MAX_INFO_FRAME_BYTES,
    MAX_MESSAGE_LEN,
    MAX_MODELS,
    MAX_PROTOCOLS,
    MAX_REPLICAS,
    MAX_TAG_LEN,
    MAX_TAGS,
    PROTOCOL_ID,
    PROTOCOL_VERSION,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_DOMAIN,
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
from .signing import (
    make_response,
    open_response,
    signing_payload,
)

__all__ = [
    "BOOT_NONCE_BYTES",
    "MAX_ADDRS",
    "MAX_ADDR_LEN",
    "MAX_FEATURES",
    "MAX_GPUS",
    "MAX_ID_LEN",
    "MAX_INFO_BODY_BYTES",
    "MAX_INFO_FRAME_BYTES",
    "MAX_MESSAGE_LEN",
    "MAX_MODELS",
    "MAX_PROTOCOLS",
    "MAX_REPLICAS",
    "MAX_TAGS",
    "MAX_TAG_LEN",
    "PROTOCOL_ID",
    "PROTOCOL_VERSION",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SIGNATURE_DOMAIN",
    "Capabilities",
    "ErrorResponse",
    "Gpu",
    "InfoRequest",
    "InfoResponse",
    "Load",
    "Message",
    "ModelInfo",
    "NodeInfo",
    "Performance",
    "Resources",
    "info_from_map",
    "info_to_map",
    "make_response",
    "message_from_map",
    "message_to_map",
    "open_response",
    "signing_payload",
]
