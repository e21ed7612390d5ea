"""The roles a token grants, ordered: each includes everything the roles below it may do."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Role(IntEnum):
    """``readonly`` < ``user`` < ``operator`` < ``admin``; a role allows its own routes
    and those of every lower role."""

    READONLY = 1  # node info, peers, models, route, metrics, usage
    USER = 2  # + inference (OpenAI and Ollama chat/completions/embeddings)
    OPERATOR = 3  # + model management (load, unload, warm up)
    ADMIN = 4  # + tokens and everything else

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text`` (case-insensitive).

        Raises:
            ValueError: not a role; the message lists the valid ones.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; valid roles: "
                             + ", ".join(r.label for r in cls)) from None


def highest(roles: Iterable[Role]) -> Role | None:
    """The strongest of ``roles`` (None for no role at all)."""
    return max(roles, default=None)
