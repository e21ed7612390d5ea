"""`peerllm replicate MODEL --replicas N`: how many copies of a model the mesh keeps."""

from __future__ import annotations

import json
from typing import Any

import click
import trio

from ..errors import PeerLLMError
from ..wire.nodeinfo import MAX_REPLICAS
from .common import ApiTarget, api_url_option


@click.command()
@api_url_option()
@click.argument("model")
@click.option("--replicas", "-n", type=click.IntRange(0, MAX_REPLICAS), required=True,
              help="Copies of the model file the mesh keeps (0: no target).")
@click.option("--json", "as_json", is_flag=True, help="Print the node's answer as JSON.")
def replicate(api: ApiTarget, model: str, replicas: int, as_json: bool) -> None:
    """Keep REPLICAS copies of MODEL in the mesh.

    Set on the node at --api, which must serve MODEL; it is kept across restarts there
    and outranks models.yaml's `replicas:`. Nodes with room pull the model until the mesh
    holds that many copies (protocols/replication.md); surplus copies are never deleted.
    """

    async def post() -> dict[str, Any]:
        async with api.client(timeout_s=30.0) as client:
            return await client.set_replicas(model, replicas)

    try:
        doc = trio.run(post)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    holders = doc.get("holders") or []
    if not replicas:
        click.echo(f"{model}: no replica target on this node")
        return
    click.echo(f"{model}: the mesh keeps {replicas} copies; {len(holders)} live "
               f"holder{'' if len(holders) == 1 else 's'} now")
