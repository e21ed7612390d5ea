"""The parts of a node that move model files: the store, the blob server and client, and
the Pulls service, built over the node's host, peers and registry (node.py calls
``build_distribution``; nothing starts here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from ..auth import Authority
from ..config import NodeConfig
from ..inference.registry import ModelRegistry
from ..p2p.blob import BlobServer
from ..p2p.blob_client import BlobClient
from ..p2p.host import P2PHost
from ..p2p.registry import PeerRegistry
from ..p2p.sidechannel import connection_ip, listen_ip
from ..security_events import PeerLimitHook
from ..transfer.digests import DigestCache
from ..transfer.store import ModelStore
from .blobs import NodeCatalog
from .digesting import Digests
from .hub import HttpHub
from .installing import StoreInstaller, download_factory
from .membership import Membership
from .providers import MeshProviders
from .pulls import Pulls

MODELS_DIR: Final = "models"  # under the data dir, without inference.models_dir
DIGESTS_DIR: Final = "digests"  # model files' manifests where their folder is read-only
MB: Final = 1_000_000  # models.upload_limit is in MB/s
HTTP_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
"""URL and hub downloads: one read may wait this long (the swarm's stall timeout is
shorter and drops a silent source first)."""


def open_http() -> httpx.AsyncClient:
    """The client URL and hub pulls share (the caller closes it; proxies from the
    environment are ignored, as everywhere in peerllm)."""
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False)


def models_root(cfg: NodeConfig, data_dir: Path) -> Path:
    return cfg.inference.models_dir or data_dir / MODELS_DIR


def share_policy(share: str, *, trusted_peers: Collection[str],
                 vouched: Callable[[str], bool]) -> Callable[[str], bool]:
    """``models.share`` as the blob server's ``may_download(peer)``: any, trusted (in
    p2p.trusted_peers, or vouched for by an issuer we trust), off."""
    trusted = frozenset(trusted_peers)

    def may_download(peer_id: str) -> bool:
        if share == "off":
            return False
        if share == "trusted":
            return peer_id in trusted or vouched(peer_id)
        return True

    return may_download


@dataclass(frozen=True, kw_only=True)
class Distribution:
    store: ModelStore
    cache: DigestCache
    pulls: Pulls
    blob_server: BlobServer
    installer: StoreInstaller  # also deletes models (DELETE /api/delete)


def build_distribution(*, config: NodeConfig, data_dir: Path, host: P2PHost,
                       peers: PeerRegistry, membership: Membership, authority: Authority,
                       registry: Callable[[], ModelRegistry | None], store: ModelStore,
                       digests: Digests, http: httpx.AsyncClient,
                       on_limited: PeerLimitHook | None = None) -> Distribution:
    """Raises ConfigError: models.hf_token_file cannot be read."""
    models = config.models
    cache = DigestCache(data_dir / DIGESTS_DIR)
    installer = StoreInstaller(store=store, cache=cache, registry=registry,
                               announce=membership.announce,
                               context_size=config.inference.context_size,
                               gpu_layers=config.inference.gpu_layers)
    pulls = Pulls(
        finder=MeshProviders(registry=peers, dialer=membership, self_peer_id=host.peer_id),
        peers=BlobClient(host, side_channel=models.side_channel,
                         peer_ip=lambda peer: connection_ip(host, peer)),
        hub=HttpHub(client=http, endpoint=models.hf_endpoint,
                    token=models.resolve_hf_token()),
        open_download=download_factory(store, stall_timeout_s=models.stall_timeout_s),
        installer=installer)
    server = BlobServer(
        catalog=NodeCatalog(store=store, cache=cache, digests=digests, registry=registry,
                            in_flight=pulls.downloads),
        may_download=share_policy(
            models.share, trusted_peers=config.p2p.trusted_peers,
            vouched=lambda peer: authority.vouched_for(peer, now=time.time())),
        max_streams_per_peer=models.max_uploads_per_peer,
        upload_limit_bps=None if models.upload_limit is None else models.upload_limit * MB,
        side_channel=models.side_channel, self_peer_id=host.peer_id,
        side_channel_host=listen_ip(config.p2p.listen), on_limited=on_limited)
    return Distribution(store=store, cache=cache, pulls=pulls, blob_server=server,
                        installer=installer)

