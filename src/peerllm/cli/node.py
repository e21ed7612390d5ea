"""`peerllm node`: run the daemon until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import click
import trio

from ..config import NodeConfig, parse_api_address
from ..errors import ConfigError, PeerLLMError
from ..inference.settings import InferenceConfig
from .common import build_config, build_inference_config, setup_logging

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 4.0


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
@click.option("--network-key", help="Private network key: 64 hex characters.")
@click.option("--api", "api_addr", help="HTTP API address HOST:PORT (default 127.0.0.1:7471).")
@click.option("--mdns/--no-mdns", default=None, help="LAN discovery over mDNS (default on).")
@click.option("--mdns-interface", "mdns_interfaces", multiple=True,
              help="Bind mDNS to this interface IP (repeatable; default all).")
@click.option("--dht/--no-dht", default=None, help="Kademlia DHT (default on).")
@click.option("--model", "models", multiple=True, help="GGUF model file to serve (repeatable).")
@click.option("--no-default-model", is_flag=True, help="Do not serve the bundled default model.")
@click.option("--models-config", type=click.Path(path_type=Path, dir_okay=False),
              help="models.yaml listing the models to serve [env MODELS_CONFIG_PATH].")
@click.option("--preload", "preload", multiple=True, help="Model id to load at start (repeatable).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def node(config_path: Path | None, **opts: Any) -> None:
    """Run a PeerLLM node: join the mesh and serve the local HTTP API."""
    models_config, preload = opts.pop("models_config"), opts.pop("preload")
    flags = _flags_layer(opts)
    cfg = build_config(config_path, flags)
    inference = build_inference_config(models_config=models_config, preload=preload)
    setup_logging(cfg.log_level)
    try:
        trio.run(run_daemon, cfg, inference)
    except PeerLLMError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start the node: {exc}") from exc


def _flags_layer(o: dict[str, Any]) -> dict[str, Any]:
    flags: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        section, _, key = path.rpartition(".")
        target = flags.setdefault(section, {}) if section else flags
        target[key] = value

    if o["data_dir"] is not None:
        put("data_dir", str(o["data_dir"]))
    for opt, path in (("name", "node.name"), ("location", "node.location"),
                      ("network_key", "p2p.network_key"), ("log_level", "log_level")):
        if o[opt] is not None:
            put(path, o[opt])
    for opt, path in (("tags", "node.tags"), ("listen", "p2p.listen"),
                      ("announce", "p2p.announce"), ("bootstrap", "p2p.bootstrap"),
                      ("mdns_interfaces", "discovery.mdns_interfaces"),
                      ("models", "models.paths")):
        if o[opt]:
            put(path, list(o[opt]))
    if o["mdns"] is not None:
        put("discovery.mdns", o["mdns"])
    if o["dht"] is not None:
        put("discovery.dht", o["dht"])
    if o["no_default_model"]:
        put("models.serve_default", False)
    if o["api_addr"] is not None:
        try:
            host, port = parse_api_address(o["api_addr"])
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param_hint="--api") from exc
        put("api.host", host)
        put("api.port", port)
    return flags


async def run_daemon(cfg: NodeConfig, inference: InferenceConfig | None = None) -> None:
    from ..api import open_api
    from ..node import open_node

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def wait_for_signal() -> None:
                async for signum in signals:
                    logger.info("received %s, shutting down", signal.Signals(signum).name)
                    # Teardown steps are each shielded with their own short deadline,
                    # so the whole shutdown stays well inside SHUTDOWN_GRACE_S.
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(wait_for_signal)
            async with open_node(cfg, inference=inference) as n, open_api(n):
                _print_banner(n)
                await trio.sleep_forever()


def _print_banner(n: Any) -> None:
    click.echo(f"peerllm node {n.name}")
    click.echo(f"  peer id : {n.peer_id}")
    click.echo(f"  node id : {n.identity.node_id}")
    click.echo(f"  network : {n.host.network_key.describe()}")
    for a in n.addrs():
        click.echo(f"  listen  : {a}")
    click.echo(f"  models  : {', '.join(n.model_ids()) or '(none)'}")
    click.echo(f"  api     : {n.api_url}")
    click.echo("ready", err=False)
