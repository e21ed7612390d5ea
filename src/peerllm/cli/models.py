"""`peerllm models`: the models available in the mesh and where they are served."""

from __future__ import annotations

import json

import click
from rich.table import Table

from .common import ApiTarget, api_url_option, console, fetch


@click.command()
@api_url_option()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models(api: ApiTarget, as_json: bool) -> None:
    """List every model in the mesh with the nodes that serve it."""
    doc = fetch(api, "/v1/models")
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
