"""`peerllm usage`: a running node's usage totals by subject, peer or model."""

from __future__ import annotations

import json
from typing import Any

import click
import trio
from rich.table import Table

from ..errors import PeerLLMError
from .common import ApiTarget, api_url_option, console

BY = ("subject", "peer", "model")


def _fetch(api: ApiTarget, by: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        async with api.client(timeout_s=10.0) as client:
            return await client.usage(by)

    try:
        return trio.run(get)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc


def render_table(doc: dict[str, Any]) -> Table:
    by = doc["by"]
    node = doc["node"]
    table = Table(title=f"usage on {node['name']} ({node['peer_id'][-8:]}) by {by}")
    heads = ["peer", "relation"] if by == "peer" else [by]
    for col in (*heads, "requests", "tokens in", "tokens out", "gen s"):
        table.add_column(col, justify="left" if col in heads else "right")
    for r in [*doc["rows"], {**doc["total"], by: "total", "relation": ""}]:
        table.add_row(*(str(r.get(h, "")) for h in heads), str(r["requests"]),
                      str(r["tokens_in"]), str(r["tokens_out"]), f"{r['gen_s']:.2f}")
    return table


@click.command()
@api_url_option()
@click.option("--by", type=click.Choice(BY), default="subject", show_default=True,
              help="Group the totals by the caller's subject, the peer, or the model.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def usage(api: ApiTarget, by: str, as_json: bool) -> None:
    """Show requests, tokens and generation seconds this node ran or placed.

    A peer's share is backed by the receipts it signed (kept in the node's data dir).
    """
    doc = _fetch(api, by)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    console().print(render_table(doc))
