"""`peerllm models`: the models available in the mesh, their files and where they are."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from .common import ApiTarget, api_url_option, console, fetch


def _name(p: dict[str, Any]) -> str:
    return f"{p.get('name') or p['peer_id'][-8:]}{' (local)' if p.get('local') else ''}"


def _short(digest: object) -> str:
    text = str(digest)
    return text.removeprefix("sha256:")[:12] if text.startswith("sha256:") else "-"


def _size(n: object) -> str:
    if not isinstance(n, int) or n <= 0:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"  # unreachable: the loop returns at GiB


@click.command()
@api_url_option()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models(api: ApiTarget, as_json: bool) -> None:
    """List every model in the mesh: its file's digest and size, the nodes that hold the
    file and those that have it loaded."""
    doc = fetch(api, "/v1/models")
    rows = []
    for m in doc.get("data", []):
        providers = (m.get("peerllm") or {}).get("providers", [])
        rows.append({"id": m["id"], "providers": providers})
    if as_json:
        click.echo(json.dumps({"models": rows}, indent=2))
        return
    table = Table(title="models in the mesh")
    for column in ("model", "digest", "size", "held by", "loaded on"):
        table.add_column(column)
    for r in rows:
        providers = r["providers"]
        digests = sorted({_short(p.get("digest")) for p in providers} - {"-"}) or ["-"]
        sizes = sorted({_size(p.get("file_bytes")) for p in providers} - {"-"}) or ["-"]
        loaded = [_name(p) for p in providers if p.get("loaded")]
        table.add_row(r["id"], ", ".join(digests), ", ".join(sizes),
                      ", ".join(_name(p) for p in providers) or "-", ", ".join(loaded) or "-")
    console().print(table)
