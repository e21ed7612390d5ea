"""The messages of /peerllm/node-info/1.0.0: a node's signed NodeInfo and its envelope.

Frozen dataclasses and the protocol's limits; map forms follow protocols/node-info.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..load import Load

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
MAX_REPLICAS: Final = 64
"""The most copies of a model a node may ask the mesh to keep (models.yaml ``replicas``)."""


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
    size_bytes: int | None  # memory needed while loaded (weights + KV cache), for placement
    tags: tuple[str, ...]
    file_bytes: int | None = None  # the model file's size, as Ollama's /api/tags shows it
    digest: str | None = None  # sha256:<64 hex> of the file served, once the node knows it
    replicas: int = 0  # copies the owner wants the mesh to keep; 0 = no target
    # Conversations whose KV cache a batch slot holds (wire.prefixes), newest first.
    prefixes: tuple[bytes, ...] = ()


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

