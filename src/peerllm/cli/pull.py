"""`peerllm pull`: get a model into a running node, from peers, a URL or the hub.

The download runs in the daemon; this command only follows its progress. Ctrl-C stops
following, not the download: the daemon keeps the partial file, and running the same
command again joins the download (or resumes it after a restart).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import trio

from ..errors import PeerLLMError
from .common import ApiTarget, api_url_option, console

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def _sources(doc: dict[str, Any], names: dict[str, str] | None = None) -> str:
    active = [s for s in doc.get("sources") or [] if s.get("state") == "active"]
    if not active:
        return ""
    names = names or {}

    def shown(s: dict[str, Any]) -> str:
        label = str(s.get("label", "?"))
        if s.get("kind") != "peer":
            return label  # a URL by its origin
        # A peer by its friendly name, else its id's tail (the head is the same for all).
        return names.get(label) or label[-12:]

    names_text = ", ".join(shown(s) for s in active[:3])
    more = f" +{len(active) - 3}" if len(active) > 3 else ""
    return f"from {names_text}{more}"


async def _follow(api: ApiTarget, ref: str, digest: str | None, as_json: bool) -> None:
    async with api.client(timeout_s=60.0) as client:
        if as_json:
            async for doc in client.pull(ref, digest=digest):
                click.echo(json.dumps(doc))
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        try:  # friendly names for the sources; ids will do when the list is refused
            names = {str(r["peer_id"]): str(r["name"]) for r in await client.peers()
                     if r.get("peer_id") and r.get("name")}
        except PeerLLMError:
            names = {}
        last: dict[str, Any] = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[sources]}"), console=console(),
                      transient=False) as bar:
            task = bar.add_task(ref, total=None, sources="")
            async for doc in client.pull(ref, digest=digest):
                last = doc
                bar.update(task, description=str(doc.get("status") or ref),
                           total=doc.get("total"), completed=doc.get("completed") or 0,
                           sources=_sources(doc, names))
        model = last.get("model") or ref
        digest_text = f" ({last['digest']})" if last.get("digest") else ""
        console().print(f"[green]{model}[/green] is ready{digest_text}")


@click.command()
@click.argument("model")
@api_url_option()
@click.option("--digest", help="The file's sha256:<hex> digest: checked at the end, and "
                               "peers holding it are asked before the URL.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one progress event per line, as JSON.")
def pull(model: str, api: ApiTarget, digest: str | None, as_json: bool) -> None:
    """Get MODEL (a model id, a sha256: digest, a URL or hf://OWNER/REPO/FILE) into the
    node, from the peers that hold it or the URL."""
    try:
        trio.run(_follow, api, model, digest, as_json)
    except KeyboardInterrupt:
        click.echo("stopped following; the node keeps downloading (run the same command "
                   "to follow it again)", err=True)
        sys.exit(INTERRUPTED)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc
