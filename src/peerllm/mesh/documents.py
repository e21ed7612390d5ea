"""The JSON documents that describe a node: ``/v1/node/info``, ``peers --json`` rows.

A NodeInfo is turned into JSON here and nowhere else; the API and the CLI read these
shapes (README "Running a mesh").
"""

from __future__ import annotations

from typing import Any

from ..config import NodeConfig
from ..p2p.limits import StreamStatistics
from ..p2p.registry import PeerEntry, PeerState
from ..wire import nodeinfo as wni

Json = dict[str, Any]


def resources_doc(r: wni.Resources) -> Json:
    return {
        "cpu_cores": r.cpu_cores,
        "ram_total_bytes": r.ram_total_bytes,
        "ram_free_bytes": r.ram_free_bytes,
        "gpus": [{"index": g.index, "name": g.name, "vram_total_bytes": g.vram_total_bytes,
                  "vram_free_bytes": g.vram_free_bytes} for g in r.gpus],
        "vram_free_bytes": sum(g.vram_free_bytes for g in r.gpus),
    }


def load_doc(load: wni.Load) -> Json:
    return {"active": load.active, "queued": load.queued, "capacity": load.capacity}


def limits_doc(cfg: NodeConfig, *, infer: StreamStatistics,
               info_refused: int, embed: StreamStatistics | None = None) -> Json:
    """Who may use this node how much: the per-peer limits of the libp2p side, the share
    of each model's slots peers may hold, and the refusals so far. Local JSON only (not
    part of the signed NodeInfo)."""
    p2p, inference = cfg.p2p, cfg.inference
    return {
        "max_streams_per_peer": p2p.max_streams_per_peer,
        "peer_streams_per_s": p2p.peer_streams_per_s,
        "peer_info_requests_per_s": p2p.peer_info_requests_per_s,
        "peer_share": inference.peer_share,
        "peer_slots_per_model": inference.peer_slots,
        "api_stall_timeout_s": cfg.api.stall_timeout_s,
        "refused": {"too_many_streams": infer.refused_too_many_streams,
                    "stream_rate": infer.refused_stream_rate, "info_rate": info_refused,
                    # embed streams have the same limits, counted apart (protocols/embed.md)
                    "embed_too_many_streams": 0 if embed is None
                    else embed.refused_too_many_streams,
                    "embed_stream_rate": 0 if embed is None else embed.refused_stream_rate},
    }


def info_document(info: wni.NodeInfo, *, uptime_s: float, network: Json,
                  limits: Json) -> Json:
    """The ``GET /v1/node/info`` document (also ``self`` in ``peers --json``)."""
    return {
        "node": {
            "id": info.node_id,
            "peer_id": info.peer_id,
            "name": info.name,
            "version": info.software_version,
            "uptime_seconds": round(uptime_s, 3),
            "location": info.location,
            "tags": list(info.tags),
            "boot_nonce": info.boot_nonce.hex(),
        },
        "capabilities": {
            "protocols": list(info.capabilities.protocols),
            "features": list(info.capabilities.features),
            "private_network": info.capabilities.private_network,
            "protocol_version": info.protocol_version,
        },
        "resources": resources_doc(info.resources),
        "network": {"addrs": list(info.addrs), **network},
        "models": [{"id": m.id, "loaded": m.loaded, "size_bytes": m.size_bytes,
                    "file_bytes": m.file_bytes, "digest": m.digest, "replicas": m.replicas,
                    "context_size": m.context_size, "tags": list(m.tags)} for m in info.models],
        "load": load_doc(info.load),
        "performance": {"tokens_per_second": info.performance.tokens_per_second,
                        "ttft_ms": info.performance.ttft_ms},
        "limits": limits,
    }


def peer_kind(e: PeerEntry) -> str:
    """``peerllm`` (it answered node-info), ``libp2p`` (a plain libp2p peer), or
    ``unknown`` (not asked yet, or it could not be)."""
    if e.state is PeerState.LIBP2P:
        return "libp2p"
    return "peerllm" if e.info is not None else "unknown"


def peer_path(e: PeerEntry, relay_name: str | None = None) -> str | None:
    """How we reach a connected peer: ``direct`` or ``relayed via <relay name or id>``;
    None while not connected."""
    if not e.connected:
        return None
    if e.relay is None:
        return "direct"
    return f"relayed via {relay_name or e.relay}"


def peer_row(e: PeerEntry, *, breaker: str, relay_name: str | None = None) -> Json:
    """One row of ``GET /v1/peers`` / ``peerllm peers --json`` (``relay_name``: the name
    of the relay ``e`` is reached through, when it is known)."""
    info = e.info
    return {
        "peer_id": e.peer_id,
        "kind": peer_kind(e),
        "name": info.name if info else None,
        "id": info.node_id if info else None,
        "addrs": list(info.addrs) if info and info.addrs else list(e.addrs),
        "models": [m.id for m in info.models] if info else [],
        "state": e.state.value,
        "sources": sorted(s.value for s in e.sources),
        "rtt_ms": None if e.rtt_ms is None else round(e.rtt_ms, 3),
        "last_seen": e.last_seen,
        "reason": e.reason,
        "connected": e.connected,
        "path": peer_path(e, relay_name),
        "relay": e.relay,
        "agent": e.agent,
        "protocols": list(e.protocols),
        "location": info.location if info else None,
        "tags": list(info.tags) if info else [],
        "version": info.software_version if info else None,
        "resources": resources_doc(info.resources) if info else None,
        "load": load_doc(info.load) if info else None,
        "conflicts": list(e.conflicts),
        "breaker": breaker,
    }
