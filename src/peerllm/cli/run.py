"""`peerllm run MODEL PROMPT`: stream an answer from the mesh to the terminal."""

from __future__ import annotations

import sys

import click
import trio

from ..errors import PeerLLMError
from .common import ApiTarget, api_url_option


@click.command()
@api_url_option()
@click.argument("model")
@click.argument("prompt")
@click.option("--chat/--raw", default=True, show_default=True,
              help="Send PROMPT as a chat message, or as raw completion text.")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1, 32768))
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0, 5))
@click.option("--seed", type=int, default=None)
@click.option("--system", default=None, help="A system message (chat mode).")
def run(api: ApiTarget, model: str, prompt: str, chat: bool, max_tokens: int,
        temperature: float, seed: int | None, system: str | None) -> None:
    """Stream MODEL's answer to PROMPT; it runs wherever the mesh places it."""
    params: dict[str, object] = {"max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        params["seed"] = seed

    async def main() -> str | None:
        async with api.client() as client:
            if chat:
                messages = ([{"role": "system", "content": system}] if system else []) + [
                    {"role": "user", "content": prompt}]
                stream = client.chat(model, messages, **params)
            else:
                stream = client.generate(model, prompt, **params)
            async for text in stream:
                sys.stdout.write(text)
                sys.stdout.flush()
            return client.last_served_by

    try:
        served_by = trio.run(main)
    except PeerLLMError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    sys.stdout.write("\n")
    if served_by:
        click.echo(f"[served by {served_by}]", err=True)
