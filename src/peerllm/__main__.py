"""`python -m peerllm` runs the CLI."""

from .cli import main

main()
