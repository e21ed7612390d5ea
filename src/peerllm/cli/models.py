"""`peerllm models`: the models available in the mesh and where they are served."""

from __future__ import annotations

import json

import click
from rich.table import Table

from ..errors import PeerLLMError
from .client import NodeClient
from .common import api_url_option, console


@click.command()
@api_url_option()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models(api_url: str, as_json: bool) -> None:
    """List every model in the mesh with the nodes that serve it."""
    client = NodeClient(api_url)
    try:
        doc = client.get("/v1/models")
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        client.close()
    rows = []
    for m in doc.get("data", []):
        providers = (m.get("peerllm") or {}).get("providers", [])
        rows.append({"id": m["id"], "providers": providers})
    if as_json:
        click.echo(json.dumps({"models": rows}, indent=2))
        return
    table = Table(title="models in the mesh")
    table.add_column("model")
    table.add_column("served by")
    for r in rows:
        served = ", ".join(
            f"{p.get('name') or p['peer_id'][-8:]}{' (local)' if p.get('local') else ''}"
            f"{'' if p.get('loaded') else ' [not loaded]'}" for p in r["providers"])
        table.add_row(r["id"], served or "-")
    console().print(table)
