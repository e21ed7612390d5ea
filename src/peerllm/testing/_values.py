"""Ready-made values for tests: a node identity held in memory and a valid NodeInfo."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._types import NodeUUID
from ..identity import Identity, generate_private_key, peer_id_of, public_key_bytes
from ..wire import embed as we
from ..wire import infer as wi
from ..wire import nodeinfo as wni


def make_identity(name: str = "test-node", *, seed: int | None = None) -> Identity:
    """An Identity that touches no files; the same ``seed`` (0..255) gives the same key."""
    key = generate_private_key() if seed is None else \
        Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    public = public_key_bytes(key)
    return Identity(private_key=key, public_key=public, peer_id=peer_id_of(public),
                    node_id=NodeUUID(str(uuid.uuid5(uuid.NAMESPACE_URL, name))), name=name,
                    location=None, tags=())


def make_node_info(peer_id: str, *, models: tuple[str, ...] = ("m",),
                   **changes: Any) -> wni.NodeInfo:
    """A NodeInfo that passes the wire checks: ``peer_id`` serving ``models``, idle.

    ``changes`` replace any other field (``name=...``, ``load=wni.Load(...)``).
    """
    info = wni.NodeInfo(
        protocol_version=wni.PROTOCOL_VERSION, software_version="0.1.0", peer_id=peer_id,
        node_id="7b0c1d5e-0000-4000-8000-000000000000", name=peer_id, location=None,
        tags=(), boot_nonce=b"\x01" * 16, started_at=1000.0, issued_at=1000.0, seq=1,
        addrs=(),
        capabilities=wni.Capabilities(protocols=(wni.PROTOCOL_ID, wi.PROTOCOL_ID, we.PROTOCOL_ID),
                                      features=(), private_network=False),
        resources=wni.Resources(cpu_cores=2, ram_total_bytes=16 << 30,
                                ram_free_bytes=8 << 30, gpus=()),
        models=tuple(wni.ModelInfo(id=m, loaded=True, context_size=None, size_bytes=1 << 30,
                                   tags=()) for m in models),
        load=wni.Load(active=0, queued=0, capacity=2),
        performance=wni.Performance(tokens_per_second=50.0, ttft_ms=None))
    return dataclasses.replace(info, **changes)
