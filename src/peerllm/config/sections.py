"""The frozen, validated sections of NodeConfig (``node``, ``p2p``, ``discovery``, ``api``...).

Each section checks and normalises its own fields in ``__post_init__`` with the checks
of ``validate``, so a section built directly is as valid as one loaded from YAML.
The ``inference`` section lives in ``config.inference``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from .keyfiles import HEX64, read_network_key_file, read_secret_file
from .origins import allowed_hosts_setting, cors_origins_setting
from .validate import (
    DEFAULT_P2P_PORT,
    QUOTE_HINT,
    boolean,
    choice,
    fraction,
    integer,
    multiaddrs,
    opt_path,
    opt_str,
    positive_float,
    set_field,
    str_tuple,
    string,
)

DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 7471
# Peers reject DHT records that live longer than this (wire/records.py MAX_RECORD_TTL_S).
MAX_RECORD_TTL_S: Final = 24 * 3600.0
STRATEGIES: Final = ("mcda", "round_robin", "weighted_round_robin", "least_connections",
                     "latency", "random")

SERVE_PEERS: Final = ("any", "trusted")
RELAY_SERVICE_MODES: Final = ("auto", "on", "off")
REACHABILITY_MODES: Final = ("auto", "public", "private")
SHARE_MODES: Final = ("any", "trusted", "off")
DEFAULT_HF_ENDPOINT: Final = "https://huggingface.co"

_PEER_ID: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,64}")  # base58btc


@dataclass(frozen=True, kw_only=True)
class NodeIdentityConfig:
    """Section ``node``: how this node presents itself. The name is checked by identity/."""

    name: str | None = None  # friendly DNS-label name; None = generate once, then keep
    id: str | None = None  # node UUID; None = keep the stored one (uuid4 on first start)
    location: str | None = None  # free text, e.g. "rack-2"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_field(self, "name", opt_str("node.name", self.name))
        if self.id is not None:
            text = string("node.id", self.id).strip()
            try:
                set_field(self, "id", str(uuid.UUID(text)))
            except ValueError:
                raise ConfigError("node.id", f"{text!r} is not a UUID") from None
        set_field(self, "location", opt_str("node.location", self.location))
        set_field(self, "tags", str_tuple("node.tags", self.tags))


@dataclass(frozen=True, kw_only=True)
class P2PConfig:
    """Section ``p2p``: the libp2p host, its peers and its timers."""

    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}",)  # TCP multiaddrs
    announce: tuple[str, ...] = ()  # addresses to advertise instead of the listen ones
    bootstrap: tuple[str, ...] = ()  # full multiaddrs ending in /p2p/<peer-id>
    # Private-network key, 64 hex chars; None = public. Kept out of repr(): a config
    # printed in a traceback or a debug line must not carry the secret.
    network_key: str | None = field(default=None, repr=False)
    network_key_file: Path | None = None  # file holding the key instead (keyfiles.py)
    serve_peers: str = "any"  # any | trusted: who may run inference here (protocols/auth.md)
    trusted_peers: tuple[str, ...] = ()  # peer IDs always served in serve_peers: trusted
    dial_timeout_s: float = 5.0
    call_timeout_s: float = 5.0
    heartbeat_interval_s: float = 5.0
    heartbeat_misses: int = 2  # missed heartbeats before a peer counts as down
    peer_stale_s: float = 30.0  # unheard-from peers are dropped after this
    max_peers: int = 200
    # Per-peer limits on what any remote peer may ask of us (over them: a retryable
    # "busy" refusal). Defaults sit far above what our own nodes send (a heartbeat every
    # 5 s, a node-info refresh after each request).
    max_streams_per_peer: int = 8  # infer requests served at once for one peer
    peer_streams_per_s: float = 20.0  # new infer streams per second per peer (burst: same)
    peer_info_requests_per_s: float = 10.0  # node-info requests per second per peer (burst: same)
    # Reach across NATs (protocols/relay.md). auto: serve as a circuit relay v2 while
    # this node is known to be publicly reachable (AutoNAT); on / off: always / never.
    relay_service: str = "auto"
    relays: tuple[str, ...] = ()  # relay multiaddrs ending in /p2p/<id>, tried first
    relay_max_reservations: int = 64  # reservations this relay holds at once
    relay_max_circuits: int = 32  # relayed connections through this relay at once
    relay_reservation_ttl_s: float = 3600.0  # a reservation lasts this long unless renewed
    relay_circuit_duration_s: float = 3600.0  # a relayed connection is cut after this
    relay_circuit_bytes: int = 1 << 28  # ...or after this many bytes (each direction)
    hole_punch: bool = True  # try DCUtR to turn a relayed connection into a direct one
    # auto: ask peers to dial us back (AutoNAT) to learn whether we are reachable;
    # public / private: take that as known (private = always reserve relay slots).
    reachability: str = "auto"

    def __post_init__(self) -> None:
        listen = multiaddrs("p2p.listen", self.listen, need_tcp=True)
        if not listen:
            raise ConfigError("p2p.listen", "at least one listen address is needed")
        set_field(self, "listen", listen)
        set_field(self, "announce", multiaddrs("p2p.announce", self.announce, need_tcp=True))
        set_field(self, "bootstrap",
                  multiaddrs("p2p.bootstrap", self.bootstrap, need_peer_id=True))
        set_field(self, "relays", multiaddrs("p2p.relays", self.relays, need_peer_id=True))
        set_field(self, "relay_service", choice("p2p.relay_service", self.relay_service,
                                                RELAY_SERVICE_MODES))
        set_field(self, "reachability", choice("p2p.reachability", self.reachability,
                                               REACHABILITY_MODES))
        set_field(self, "hole_punch", boolean("p2p.hole_punch", self.hole_punch))
        for name in ("relay_max_reservations", "relay_max_circuits", "relay_circuit_bytes"):
            set_field(self, name, integer(f"p2p.{name}", getattr(self, name), 1))
        for name in ("relay_reservation_ttl_s", "relay_circuit_duration_s"):
            set_field(self, name, positive_float(f"p2p.{name}", getattr(self, name)))
        set_field(self, "serve_peers", choice("p2p.serve_peers", self.serve_peers,
                                              SERVE_PEERS))
        peers = str_tuple("p2p.trusted_peers", self.trusted_peers)
        for peer in peers:
            if not _PEER_ID.fullmatch(peer):
                raise ConfigError("p2p.trusted_peers", f"{peer[:80]!r} is not a peer ID "
                                  "(12D3KooW..., see `peerllm identity`)")
        set_field(self, "trusted_peers", peers)
        self._check_network_key()
        for name in ("dial_timeout_s", "call_timeout_s", "heartbeat_interval_s",
                     "peer_stale_s"):
            set_field(self, name, positive_float(f"p2p.{name}", getattr(self, name)))
        set_field(self, "heartbeat_misses",
                  integer("p2p.heartbeat_misses", self.heartbeat_misses, 1))
        set_field(self, "max_peers", integer("p2p.max_peers", self.max_peers, 1))
        set_field(self, "max_streams_per_peer",
                  integer("p2p.max_streams_per_peer", self.max_streams_per_peer, 1))
        for name in ("peer_streams_per_s", "peer_info_requests_per_s"):
            set_field(self, name, positive_float(f"p2p.{name}", getattr(self, name),
                                                 what="a number per second"))

    def _check_network_key(self) -> None:
        key, path = self.network_key, opt_path("p2p.network_key_file", self.network_key_file)
        set_field(self, "network_key_file", path)
        if key is not None and path is not None:
            raise ConfigError("p2p.network_key", "give the private network key once: "
                              "p2p.network_key or p2p.network_key_file, not both")
        if path is not None:
            # Read now so that a bad file stops the node before it starts, blamed on the
            # layer that named it; resolve_network_key reads it again where it is used.
            read_network_key_file("p2p.network_key_file", path, warn=False)
        if key is None:
            return
        if not isinstance(key, str):
            raise ConfigError(
                "p2p.network_key",
                f"must be a string of 64 hex characters, got {type(key).__name__}" + QUOTE_HINT)
        if not HEX64.fullmatch(key.strip()):
            raise ConfigError(
                "p2p.network_key",
                f"must be exactly 64 hex characters (0-9, a-f), got {len(key.strip())} "
                "characters; generate one with: openssl rand -hex 32")
        set_field(self, "network_key", key.strip().lower())

    def resolve_network_key(self) -> str | None:
        """The private network key as 64 hex characters (None = the open network): the
        ``network_key`` setting, or what ``network_key_file`` holds, read now.

        The one place a node gets its key from; the file is read on every call (it may
        have been rotated since the config was built).

        Raises:
            ConfigError: ``p2p.network_key_file``; the file cannot be read or holds no key.
        """
        if self.network_key_file is None:
            return self.network_key
        return read_network_key_file("p2p.network_key_file", self.network_key_file, warn=True)


@dataclass(frozen=True, kw_only=True)
class DiscoveryConfig:
    """Section ``discovery``: how peers are found (besides ``p2p.bootstrap``)."""

    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()  # IP addresses to announce on; () = all interfaces
    dht: bool = True
    dht_republish_s: float = 300.0
    record_ttl_s: float = 3600.0  # lifetime of our signed DHT records
    known_peers_max: int = 64  # size of the persisted last-known-peers cache

    def __post_init__(self) -> None:
        set_field(self, "mdns", boolean("discovery.mdns", self.mdns))
        interfaces = str_tuple("discovery.mdns_interfaces", self.mdns_interfaces)
        for address in interfaces:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(
                    "discovery.mdns_interfaces", f"{address!r} is not an IP address"
                ) from None
        set_field(self, "mdns_interfaces", interfaces)
        set_field(self, "dht", boolean("discovery.dht", self.dht))
        for name in ("dht_republish_s", "record_ttl_s"):
            set_field(self, name, positive_float(f"discovery.{name}", getattr(self, name)))
        set_field(self, "known_peers_max",
                  integer("discovery.known_peers_max", self.known_peers_max, 1))
        if self.record_ttl_s > MAX_RECORD_TTL_S:
            raise ConfigError("discovery.record_ttl_s",
                              f"must be at most {MAX_RECORD_TTL_S:.0f} (peers reject longer)")
        if self.dht_republish_s >= self.record_ttl_s:
            raise ConfigError(
                "discovery.dht_republish_s",
                f"must be less than discovery.record_ttl_s ({self.record_ttl_s:g}), or "
                "records expire before they are republished",
            )


def is_loopback(host: str) -> bool:
    """Whether an API host binds to this machine only (``localhost``, 127/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """Section ``api``: the local HTTP API (OpenAI/Ollama-style endpoints)."""

    host: str = DEFAULT_API_HOST  # interface to bind; loopback unless told otherwise
    port: int = DEFAULT_API_PORT  # 0 = any free port
    # Web origins whose pages may call the API from a browser (CORS), e.g.
    # "http://localhost:3000"; "*" = any page. () = none: browser pages are refused.
    cors_origins: tuple[str, ...] = ()
    # Host names the API answers to besides IP addresses, localhost and api.host (the
    # Host header check against DNS rebinding); "*" = any name.
    allowed_hosts: tuple[str, ...] = ()
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, the API is https
    tls_key: Path | None = None  # PEM private key of tls_cert (a file, never inline)
    # A streamed response whose client stops reading for this long is dropped: the
    # generation stops and its model slot goes to the next request.
    stall_timeout_s: float = 10.0
    # A request body not fully received this long after the request started is answered
    # 408 and its connection closed (slow uploads hold a connection and its memory).
    body_timeout_s: float = 30.0
    # HTTP requests being read or answered at once; past it, a request gets 503 with
    # Retry-After at once, before its body is read.
    max_open_requests: int = 512

    def __post_init__(self) -> None:
        host = string("api.host", self.host)
        if host.startswith("[") and host.endswith("]"):  # "[::1]" -> "::1"
            host = host[1:-1]
        if not host or any(c.isspace() or c in "/[]" for c in host):
            raise ConfigError("api.host", f"{self.host!r} is not a host name or IP address")
        set_field(self, "host", host)
        set_field(self, "port", integer("api.port", self.port, 0, 65535))
        set_field(self, "cors_origins", cors_origins_setting(self.cors_origins))
        set_field(self, "allowed_hosts", allowed_hosts_setting(self.allowed_hosts))
        set_field(self, "stall_timeout_s", positive_float("api.stall_timeout_s",
                                                          self.stall_timeout_s))
        set_field(self, "body_timeout_s", positive_float("api.body_timeout_s",
                                                         self.body_timeout_s))
        set_field(self, "max_open_requests", integer("api.max_open_requests",
                                                     self.max_open_requests, 1, 1_000_000))
        self._check_tls()

    def _check_tls(self) -> None:
        cert = opt_path("api.tls_cert", self.tls_cert)
        key = opt_path("api.tls_key", self.tls_key)
        if (cert is None) != (key is None):
            given, missing = ("api.tls_cert", "api.tls_key") if key is None \
                else ("api.tls_key", "api.tls_cert")
            raise ConfigError(missing, f"{given} is set but {missing} is not; give both "
                              "(the certificate chain and its private key) or neither")
        # Readable now, so a typo stops the node before it starts; the API loads the
        # pair (and says if they do not match) when it binds.
        if cert is not None and key is not None:
            read_secret_file("api.tls_cert", cert, what="TLS certificate")
            read_secret_file("api.tls_key", key, what="TLS key")
        set_field(self, "tls_cert", cert)
        set_field(self, "tls_key", key)


@dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    """Section ``models``: what this node serves."""

    serve_default: bool = True  # serve the bundled default model
    paths: tuple[str, ...] = ()  # extra GGUF model files
    # Model distribution (protocols/blob.md, protocols/replication.md).
    share: str = "any"  # who may download our model files: any, trusted (peers) or off
    upload_limit: float | None = None  # MB/s (10^6 B/s) over all uploads; None = no cap
    max_uploads_per_peer: int = 4  # blob streams served at once to one peer
    side_channel: bool = True  # bulk bytes over a TLS side channel bound to both peer ids
    stall_timeout_s: float = 15.0  # a source silent this long mid-chunk is dropped
    hf_endpoint: str = DEFAULT_HF_ENDPOINT  # hf://OWNER/REPO/FILE resolves against this
    hf_token: str | None = field(default=None, repr=False)  # secret: prefer hf_token_file
    hf_token_file: Path | None = None  # a file holding the Hugging Face token
    replication_interval_s: float = 10.0  # how often replication targets are checked
    replication_grace_s: float = 60.0  # a holder gone this long no longer counts

    def __post_init__(self) -> None:
        set_field(self, "serve_default", boolean("models.serve_default", self.serve_default))
        set_field(self, "paths", str_tuple("models.paths", self.paths))
        set_field(self, "share", choice("models.share", self.share, SHARE_MODES))
        if self.upload_limit is not None:
            set_field(self, "upload_limit", positive_float(
                "models.upload_limit", self.upload_limit, what="MB/s"))
        set_field(self, "max_uploads_per_peer",
                  integer("models.max_uploads_per_peer", self.max_uploads_per_peer, 1, 64))
        set_field(self, "side_channel", boolean("models.side_channel", self.side_channel))
        set_field(self, "stall_timeout_s",
                  positive_float("models.stall_timeout_s", self.stall_timeout_s))
        endpoint = string("models.hf_endpoint", self.hf_endpoint).strip().rstrip("/")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
            raise ConfigError("models.hf_endpoint",
                              f"expected an http(s) URL, got {endpoint!r}")
        set_field(self, "hf_endpoint", endpoint)
        token, path = opt_str("models.hf_token", self.hf_token), \
            opt_path("models.hf_token_file", self.hf_token_file)
        if token is not None and path is not None:
            raise ConfigError("models.hf_token", "give the Hugging Face token once: "
                              "models.hf_token or models.hf_token_file, not both")
        set_field(self, "hf_token", token)
        set_field(self, "hf_token_file", path)
        set_field(self, "replication_interval_s", positive_float(
            "models.replication_interval_s", self.replication_interval_s))
        set_field(self, "replication_grace_s", positive_float(
            "models.replication_grace_s", self.replication_grace_s))

    def resolve_hf_token(self) -> str | None:
        """The Hugging Face token: ``hf_token``, or what ``hf_token_file`` holds, read now.

        Raises:
            ConfigError: ``models.hf_token_file``; the file cannot be read or is empty.
        """
        if self.hf_token_file is None:
            return self.hf_token
        data = read_secret_file("models.hf_token_file", self.hf_token_file,
                                what="Hugging Face token file")
        try:
            token = data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ConfigError("models.hf_token_file",
                              f"{self.hf_token_file} is not text") from None
        if not token:
            raise ConfigError("models.hf_token_file", f"{self.hf_token_file} is empty")
        return token


@dataclass(frozen=True, kw_only=True)
class SchedulingSettings:
    """Section ``scheduling``: how this node chooses where a request runs."""

    strategy: str = "mcda"  # one of STRATEGIES
    weight_free_memory: float = 0.40  # MCDA weights; normalised to sum 1
    weight_load: float = 0.30
    weight_latency: float = 0.20
    weight_throughput: float = 0.10
    tie_epsilon: float = 0.05  # scores this close to the best are a near-tie (anti-herding)
    # A session's requests prefer the peer that served its last turn; a chat's next turn
    # without one, the node advertising its prefix (node-info ModelInfo.prefixes).
    affinity: bool = True
    breaker_failure_threshold: int = 3  # consecutive failures that open a peer's breaker
    breaker_cooldown_s: float = 30.0  # open -> half-open after this long
    breaker_half_open_successes: int = 2  # half-open -> closed after this many successes
    breaker_trial_timeout_s: float = 10.0  # a half-open trial with no answer by then failed
    first_token_timeout_s: float = 60.0  # per queued request ahead (scheduling.timeouts)
    stall_timeout_s: float = 15.0  # cap on a remote stream's silence mid-way (scheduling.timeouts)

    def __post_init__(self) -> None:
        set_field(self, "strategy", choice("scheduling.strategy", self.strategy, STRATEGIES))
        weights = ("weight_free_memory", "weight_load", "weight_latency", "weight_throughput")
        for name in weights:
            set_field(self, name, fraction(f"scheduling.{name}", getattr(self, name)))
        if sum(getattr(self, name) for name in weights) <= 0:
            raise ConfigError("scheduling.weight_free_memory",
                              "at least one MCDA weight must be > 0")
        set_field(self, "tie_epsilon", fraction("scheduling.tie_epsilon", self.tie_epsilon,
                                                high=1.0))
        set_field(self, "affinity", boolean("scheduling.affinity", self.affinity))
        set_field(self, "breaker_failure_threshold",
                  integer("scheduling.breaker_failure_threshold",
                          self.breaker_failure_threshold, 1))
        set_field(self, "breaker_half_open_successes",
                  integer("scheduling.breaker_half_open_successes",
                          self.breaker_half_open_successes, 1))
        for name in ("breaker_cooldown_s", "breaker_trial_timeout_s", "first_token_timeout_s",
                     "stall_timeout_s"):
            set_field(self, name, positive_float(f"scheduling.{name}", getattr(self, name)))
