"""`peerllm node`: run the daemon until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
import trio

from ..config import NodeConfig, parse_api_address, put_dotted
from ..errors import ConfigError, PeerLLMError
from .common import build_config, setup_logging

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 4.0
"""After the first SIGINT/SIGTERM the node has this long to stop cleanly (the bar is 5 s)."""
FLUSH_TIMEOUT_S = 0.5
"""How long a forced exit waits for the logs to be flushed."""


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML config file (see configs/node.example.yaml).")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where the identity and caches live [env PEERLLM_DATA_DIR].")
@click.option("--name", help="Friendly node name, DNS-label style [env PEERLLM_NODE_NAME].")
@click.option("--location", help="Free-form location, e.g. 'rack-2' [env NODE_LOCATION].")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable) [env NODE_TAGS].")
@click.option("--listen", multiple=True, help="libp2p listen multiaddr (repeatable).")
@click.option("--announce", multiple=True, help="Address to announce instead (repeatable).")
@click.option("--bootstrap", multiple=True, help="Peer multiaddr ending in /p2p/<id> (repeatable).")
@click.option("--relay", "relays", multiple=True,
              help="Circuit relay v2 multiaddr ending in /p2p/<id>, tried first when this "
                   "node is behind a NAT (repeatable).")
@click.option("--relay-service", type=click.Choice(["auto", "on", "off"]),
              help="Serve as a circuit relay for NATed nodes: auto (while publicly "
                   "reachable, the default), on or off.")
@click.option("--network-key",
              help="Private network key: 64 hex characters. Other local users can see it "
                   "in `ps`: prefer --network-key-file [env PEERLLM_NETWORK_KEY].")
@click.option("--network-key-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File holding the private network key: 64 hex characters or a libp2p "
                   "swarm.key; keep it mode 600 [env PEERLLM_NETWORK_KEY_FILE].")
@click.option("--api", "api_addr", help="HTTP API address HOST:PORT (default 127.0.0.1:7471).")
@click.option("--api-tls-cert", type=click.Path(path_type=Path, dir_okay=False),
              help="Serve the API over https with this PEM certificate chain (needs "
                   "--api-tls-key) [env PEERLLM_API_TLS_CERT].")
@click.option("--api-tls-key", type=click.Path(path_type=Path, dir_okay=False),
              help="PEM private key of --api-tls-cert [env PEERLLM_API_TLS_KEY].")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Web origin whose pages may call the API from a browser, e.g. "
                   "http://localhost:3000 (repeatable; '*' = any page; default none) "
                   "[env PEERLLM_API_CORS_ORIGINS].")
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="Host name the API answers to besides IP addresses, localhost and the "
                   "--api host (repeatable; refuses DNS rebinding) "
                   "[env PEERLLM_API_ALLOWED_HOSTS].")
@click.option("--mdns/--no-mdns", default=None, help="LAN discovery over mDNS (default on).")
@click.option("--mdns-interface", "mdns_interfaces", multiple=True,
              help="Bind mDNS to this interface IP (repeatable; default all).")
@click.option("--dht/--no-dht", default=None, help="Kademlia DHT (default on).")
@click.option("--model", "models", multiple=True, help="GGUF model file to serve (repeatable).")
@click.option("--no-default-model", is_flag=True, help="Do not serve the bundled default model.")
@click.option("--models-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where model ids and relative model paths resolve [env MODELS_DIR].")
@click.option("--models-config", type=click.Path(path_type=Path, dir_okay=False),
              help="models.yaml listing the models to serve [env MODELS_CONFIG_PATH].")
@click.option("--preload", multiple=True,
              help="Model id to load at start (repeatable) [env MODEL_PRELOAD].")
@click.option("--default-model", help="Model for requests that name none [env MODEL_DEFAULT].")
@click.option("--cache-size-gb", type=float,
              help="Memory budget for loaded models, GiB (default 75% of RAM) "
                   "[env MODEL_CACHE_SIZE_GB].")
@click.option("--max-concurrent", type=int,
              help="Generations at once per model (default 1) [env MODEL_MAX_CONCURRENT].")
@click.option("--parallel",
              help="Sequences a generative model decodes together: auto (default: up to 4, "
                   "as memory allows) or a number; 1 = no batching [env MODEL_PARALLEL].")
@click.option("--max-queue", type=int,
              help="Requests waiting per model (default 8) [env MODEL_MAX_QUEUE].")
@click.option("--peer-share", type=float,
              help="Share of each model's slots peers may hold at once, 0..1 (default 1; "
                   "our own requests always go first) [env MODEL_PEER_SHARE].")
@click.option("--threads", type=int, help="llama.cpp threads [env MODEL_THREADS].")
@click.option("--context-size", type=int,
              help="Context size for models that do not say (default 2048) "
                   "[env MODEL_CONTEXT_SIZE].")
@click.option("--gpu-layers", type=int,
              help="GPU layers for models that do not say; -1 = all (default 0) "
                   "[env MODEL_GPU_LAYERS].")
@click.option("--require-auth/--no-require-auth", "require_auth", default=None,
              help="Every API request needs a token (see `peerllm token create`) "
                   "[env PEERLLM_REQUIRE_AUTH].")
@click.option("--trust-issuer", "trust_issuers", multiple=True,
              help="Also accept tokens of this issuer (what `peerllm auth issuer` prints on "
                   "another node; repeatable) [env PEERLLM_TRUSTED_ISSUERS].")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow an API on a non-loopback address without --require-auth.")
@click.option("--serve-peers", type=click.Choice(["any", "trusted"]),
              help="Run inference for any peer, or only trusted ones (default any).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def node(config_path: Path | None, **opts: Any) -> None:
    """Run a PeerLLM node: join the mesh and serve the local HTTP API.

    Every setting is in the YAML file (--config); the options here and the environment
    variables override it. See configs/node.example.yaml.
    """
    cfg = build_config(config_path, flags_layer(opts))
    setup_logging(cfg.log_level)
    from ..api.server import check_exposure

    try:
        check_exposure(cfg)  # before anything starts: a refused config costs nothing
        trio.run(run_daemon, cfg)
    except PeerLLMError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start the node: {exc}") from exc
    # Stopped cleanly: every resource was closed by the node's teardown (known peers
    # saved, models freed, sockets closed). What is left is the interpreter's own exit,
    # tearing down the libp2p object graph and modules: ~0.5 s of CPU per node, which is
    # 5 s of wall time for 20 nodes stopping together on 2 cores. Skip it.
    exit_now(None, 0)


def flags_layer(o: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (the parsed params of ``node``, less
    ``config_path``) as the top settings layer, shaped like the YAML file."""
    flags: dict[str, Any] = {}
    for opt, path in (("data_dir", "data_dir"), ("models_dir", "inference.models_dir"),
                      ("models_config", "inference.models_config_path"),
                      ("network_key_file", "p2p.network_key_file"),
                      ("api_tls_cert", "api.tls_cert"), ("api_tls_key", "api.tls_key")):
        if o[opt] is not None:
            put_dotted(flags, path, str(o[opt]))
    for opt, path in (("name", "node.name"), ("location", "node.location"),
                      ("network_key", "p2p.network_key"), ("log_level", "log_level"),
                      ("default_model", "inference.default_model"),
                      ("cache_size_gb", "inference.cache_size_gb"),
                      ("max_concurrent", "inference.max_concurrent"),
                      ("parallel", "inference.parallel"),
                      ("max_queue", "inference.max_queue"),
                      ("peer_share", "inference.peer_share"),
                      ("threads", "inference.n_threads"),
                      ("context_size", "inference.context_size"),
                      ("gpu_layers", "inference.gpu_layers"), ("mdns", "discovery.mdns"),
                      ("dht", "discovery.dht"), ("require_auth", "auth.required"),
                      ("serve_peers", "p2p.serve_peers"),
                      ("relay_service", "p2p.relay_service")):
        if o[opt] is not None:
            put_dotted(flags, path, o[opt])
    for opt, path in (("tags", "node.tags"), ("listen", "p2p.listen"),
                      ("announce", "p2p.announce"), ("bootstrap", "p2p.bootstrap"),
                      ("relays", "p2p.relays"),
                      ("mdns_interfaces", "discovery.mdns_interfaces"),
                      ("models", "models.paths"), ("preload", "inference.preload"),
                      ("trust_issuers", "auth.trusted_issuers"),
                      ("cors_origins", "api.cors_origins"),
                      ("allowed_hosts", "api.allowed_hosts")):
        if o[opt]:
            put_dotted(flags, path, list(o[opt]))
    if o["no_default_model"]:
        put_dotted(flags, "models.serve_default", False)
    if o["insecure_no_auth"]:
        put_dotted(flags, "auth.insecure_no_auth", True)
    if o["api_addr"] is not None:
        try:
            host, port = parse_api_address(o["api_addr"])
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param_hint="--api") from exc
        put_dotted(flags, "api.host", host)
        put_dotted(flags, "api.port", port)
    return flags


async def run_daemon(cfg: NodeConfig) -> None:
    """Run the node and its HTTP API until SIGINT/SIGTERM (see ``StopOnSignals``)."""
    from ..api import open_api
    from ..node import open_node

    with trio.CancelScope() as scope, StopOnSignals(scope, grace_s=SHUTDOWN_GRACE_S):
        async with open_node(cfg) as n, open_api(n):
            _print_banner(n)
            await trio.sleep_forever()


class StopOnSignals:
    """SIGINT/SIGTERM stop the daemon: the first cancels ``scope`` (a clean shutdown) and
    arms a watchdog that ends the process ``grace_s`` later whatever state it is in; a
    second signal ends it at once.

    Why not ``trio.open_signal_receiver``: its signals reach us only when the trio loop
    gets round to them, and the watchdog must not depend on that loop. With 20 nodes
    stopping together on 2 cores, half of them took over 5 s, and a teardown step that
    blocks (a sync call, a thread that never ends, a hung interpreter exit) would never
    stop at all. So the handlers are plain ``signal`` handlers: Python runs them on the
    main thread between two bytecodes (trio's wakeup fd wakes the loop for them), they
    hand the cancel to trio through ``TrioToken.run_sync_soon`` (safe from a signal
    handler), and the watchdog is a daemon thread started up front: it fires during a
    slow interpreter exit too, after ``trio.run`` returned. A handler only sets events
    (it may have interrupted the main thread anywhere, even inside ``threading``, so it
    starts no thread and takes no lock the main thread could hold). A forced exit
    flushes the logs first and uses ``os._exit`` with 128 + the signal number, as a
    shell reports a death by signal.
    """

    def __init__(self, scope: trio.CancelScope, *, grace_s: float) -> None:
        self._scope = scope
        self._grace_s = grace_s
        self._token = trio.lowlevel.current_trio_token()
        self._signals: list[tuple[signal.Signals, float]] = []
        self._first = threading.Event()
        self._second = threading.Event()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopOnSignals:
        threading.Thread(target=self._watchdog, name="peerllm-shutdown-watchdog",
                         daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append((signal.Signals(signum), time.monotonic()))
        if self._first.is_set():
            self._second.set()
            return
        self._first.set()
        self._token.run_sync_soon(self._stop, signal.Signals(signum))

    def _stop(self, sig: signal.Signals) -> None:
        logger.info("received %s, shutting down (at most %g s; %s again stops at once)",
                    sig.name, self._grace_s, sig.name)
        self._scope.cancel()

    def _watchdog(self) -> None:
        self._first.wait()
        first, at = self._signals[0]
        if self._second.wait(max(0.0, self._grace_s - (time.monotonic() - at))):
            again = self._signals[-1][0]
            exit_now(f"received {again.name} while shutting down; exiting now", 128 + again)
        exit_now(f"still running {self._grace_s:g} s after {first.name}; exiting now",
                 128 + first)


def exit_now(message: str | None, code: int) -> NoReturn:
    """Log ``message`` (a warning), flush the log handlers and stdio (for at most
    FLUSH_TIMEOUT_S), and end the process with ``code`` without any further cleanup."""
    flusher = threading.Thread(target=_flush_logs, args=(message,), daemon=True)
    flusher.start()
    flusher.join(FLUSH_TIMEOUT_S)
    os._exit(code)


def _flush_logs(message: str | None) -> None:
    if message is not None:
        logger.warning(message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _print_banner(n: Any) -> None:
    click.echo(f"peerllm node {n.name}")
    click.echo(f"  peer id : {n.peer_id}")
    click.echo(f"  node id : {n.identity.node_id}")
    click.echo(f"  network : {n.host.network_key.describe()}")
    for a in n.addrs():
        click.echo(f"  listen  : {a}")
    click.echo(f"  models  : {', '.join(n.model_ids()) or '(none)'}")
    click.echo(f"  api     : {n.api_url}")
    auth = n.auth_summary()
    click.echo(f"  auth    : {'tokens required' if auth['required'] else 'not required'}; "
               f"issuer {auth['issuer']}")
    for warning in n.warnings():
        click.echo(f"  WARNING : {warning}")
    click.echo("ready", err=False)
