"""The token events of one generation, the same through engine, serving, p2p, router and API.

A generation is zero or more ``TokenChunk`` followed by exactly one ``Done`` (unless it
failed: then an exception ends it instead). The local engine produces them, the infer
server sends them as wire frames, the infer client turns the frames back into them, and
the router and the HTTP API consume them without caring where they were made. Pure
values with no imports from the rest of peerllm, so every layer may use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

FinishReason = Literal["stop", "length", "cancelled"]
FINISH_REASONS: Final = ("stop", "length", "cancelled")


@dataclass(frozen=True, kw_only=True)
class TokenChunk:
    """Newly generated text (never empty) and how many tokens produced it."""

    text: str
    n_tokens: int


@dataclass(frozen=True, kw_only=True)
class Done:
    """The last item of every stream that was not failed or abandoned.

    ``prompt_tokens`` counts the prompt as fed (chat template included, resume text
    excluded); ``completion_tokens`` counts every generated token, including those of a
    stop string that was cut from the output (so it can exceed the sum of the chunks'
    ``n_tokens``). Times are from when the serving engine accepted the request.
    ``receipt`` is the serving peer's signed receipt of a forwarded request (the JWT as
    received; protocols/auth.md), None for local generations.
    """

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None  # None when no text was produced
    total_ms: float
    model: str
    receipt: str | None = None
