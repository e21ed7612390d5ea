"""`peerllm peers`: who is out there, what they serve, how healthy — from a running daemon."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table

from .common import ApiTarget, api_url_option, console, fetch


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}G"


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    d = max(0.0, now - ts)
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago"


def render_table(doc: dict[str, Any], now: float) -> Table:
    me = doc["self"]["node"]
    table = Table(title=f"peers seen by {me['name']} ({me['peer_id'][-8:]})", expand=False)
    for col in ("name", "peer", "kind", "address", "path", "models", "free vram/ram", "load",
                "rtt", "state", "breaker", "sources", "last seen"):
        table.add_column(col)
    for p in doc["peers"]:
        res = p.get("resources") or {}
        load = p.get("load")
        # A plain libp2p peer's reason is its kind (shown beside it): not repeated.
        state = p["state"] + (f" ({p['reason']})" if p.get("reason")
                              and p.get("kind") != "libp2p" else "")
        if p.get("conflicts"):
            state += " ! " + "; ".join(p["conflicts"])
        table.add_row(
            p.get("name") or ("-" if p.get("kind") == "libp2p" else "?"),
            "…" + p["peer_id"][-8:],
            p.get("kind") or "?",
            _short_addr(p.get("addrs") or []),
            p.get("path") or "-",
            ", ".join(p.get("models") or []) or "-",
            f"{_gib(res.get('vram_free_bytes')) if res.get('gpus') else '-'}"
            f"/{_gib(res.get('ram_free_bytes'))}",
            "-" if not load else f"{load['active']}+{load['queued']}/{load['capacity']}",
            "-" if p.get("rtt_ms") is None else f"{p['rtt_ms']:.1f}ms",
            state,
            p.get("breaker") or "-",
            ",".join(p.get("sources") or []),
            _ago(p.get("last_seen"), now),
        )
    return table


def render_plain(doc: dict[str, Any]) -> Table | None:
    """The plain libp2p peers' identify answers (agent, protocols); None if there are none."""
    rows = [p for p in doc["peers"] if p.get("kind") == "libp2p"]
    if not rows:
        return None
    table = Table(title="plain libp2p peers (kept, not used for inference)", expand=False)
    for col in ("peer", "agent", "protocols"):
        table.add_column(col)
    for p in rows:
        table.add_row("…" + p["peer_id"][-8:], p.get("agent") or "?",
                      ", ".join(p.get("protocols") or []) or "-")
    return table


def render(doc: dict[str, Any], now: float) -> Group:
    """Everything ``peerllm peers`` prints: the peer table, then the plain libp2p peers."""
    plain = render_plain(doc)
    return Group(render_table(doc, now), *([] if plain is None else [plain]))


def _short_addr(addrs: list[str]) -> str:
    if not addrs:
        return "-"
    a = addrs[0].split("/p2p/")[0]
    return a + (f" (+{len(addrs) - 1})" if len(addrs) > 1 else "")


@click.command()
@api_url_option()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
@click.option("--watch", is_flag=True, help="Refresh the table live until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
def peers(api: ApiTarget, as_json: bool, watch: bool, interval: float) -> None:
    """List the peers a running node knows about."""
    try:
        doc = fetch(api, "/v1/peers")
        if as_json:
            click.echo(json.dumps(doc, indent=2))
            return
        term = console()
        if not watch:
            term.print(render(doc, time.time()))
            return
        with Live(render(doc, time.time()), console=term, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(fetch(api, "/v1/peers"), time.time()),
                            refresh=True)
    except KeyboardInterrupt:
        pass
