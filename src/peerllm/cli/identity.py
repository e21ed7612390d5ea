"""`peerllm identity`: print (creating on first use) this machine's node identity."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import PeerLLMError
from ..identity import load_identity
from .common import build_config, data_dir_of


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def identity(config_path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Show the peer ID, node UUID and name of the node in the data dir."""
    flags = {"data_dir": str(data_dir)} if data_dir else {}
    cfg = build_config(config_path, flags)
    root = data_dir_of(cfg)
    try:
        ident = load_identity(root, name=cfg.node.name, node_id=cfg.node.id,
                              location=cfg.node.location, tags=cfg.node.tags)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc
    doc = {"peer_id": ident.peer_id, "id": ident.node_id, "name": ident.name,
           "location": ident.location, "tags": list(ident.tags), "data_dir": str(root)}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        for k in ("peer_id", "id", "name", "location", "data_dir"):
            click.echo(f"{k:9}: {doc[k] if doc[k] is not None else '-'}")
