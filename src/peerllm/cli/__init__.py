"""The `peerllm` command: a thin click group; one module per command."""

from __future__ import annotations

import click

from .._version import __version__
from .auth import auth, token
from .identity import identity
from .models import models
from .node import node
from .peers import peers
from .pull import pull
from .replicate import replicate
from .route import route
from .run import run
from .usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="peerllm")
def cli() -> None:
    """PeerLLM: a coordinator-free peer-to-peer LLM inference mesh."""


cli.add_command(node)
cli.add_command(peers)
cli.add_command(identity)
cli.add_command(models)
cli.add_command(pull)
cli.add_command(run)
cli.add_command(route)
cli.add_command(auth)
cli.add_command(token)
cli.add_command(usage)
cli.add_command(replicate)


def main() -> None:
    cli()
