"""`peerllm route MODEL`: where a request for MODEL would run, and why."""

from __future__ import annotations

import json

import click
from rich.table import Table

from .common import ApiTarget, api_url_option, console, fetch


@click.command()
@api_url_option()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def route(api: ApiTarget, model: str, as_json: bool) -> None:
    """Explain the routing decision for MODEL: ranked candidates with each criterion's
    normalised value and weighted contribution, and every excluded peer with its reason."""
    doc = fetch(api, "/v1/route", model=model)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    weights = ", ".join(f"{k} {v:.2f}" for k, v in doc["weights"].items())
    table = Table(title=f"route for {model} — strategy {doc['strategy']} ({weights})")
    for col in ("#", "node", "score", "free mem", "load", "latency", "tok/s", "×", "health",
                "breaker", "running+queued/slots"):
        table.add_column(col)
    for c in doc["candidates"]:
        crit = c["criteria"]

        def cell(k: str, crit: dict[str, dict[str, float]] = crit) -> str:
            return f"{crit[k]['value']:.2f} → {crit[k]['contribution']:.3f}"

        table.add_row(str(c["rank"]), (c["name"] or c["peer_id"][-8:])
                      + (" (local)" if c["local"] else ""), f"{c['score']:.3f}",
                      cell("free_memory"), cell("load"), cell("latency"), cell("throughput"),
                      f"{c['multiplier']:g}", c["health"], c["breaker"], _load(c["load"]))
    out = console()
    out.print(table)
    for ex in doc["excluded"]:
        out.print(f"excluded {ex['name']}: {ex['reason']}")
    if not doc["candidates"] and not doc["excluded"]:
        out.print(f"no node in the mesh serves {model}")


def _load(load: dict[str, object]) -> str:
    """e.g. "1+2/2, 1 ours (accepted)": where the numbers came from matters when they are
    seconds old."""
    ours = f", {load['in_flight']} ours" if load.get("in_flight") else ""
    return f"{load['active']}+{load['queued']}/{load['capacity']}{ours} ({load['from']})"
