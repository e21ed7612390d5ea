"""Friendly node names: DNS-label validation and generated ``adjective-animal-hex`` names."""

from __future__ import annotations

import random
import string
from typing import Final

MAX_NAME_LENGTH: Final = 63
_ALLOWED: Final = frozenset(string.ascii_lowercase + string.digits + "-")

_ADJECTIVES: Final = (
    "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "curious",
    "daring", "eager", "fancy", "fierce", "gentle", "glad", "golden", "happy", "humble",
    "jolly", "keen", "kind", "lively", "lucky", "merry", "mighty", "misty", "noble",
    "polite", "proud", "quick", "quiet", "rapid", "shy", "silent", "silver", "sleepy",
    "smart", "snowy", "steady", "sunny", "swift", "tidy", "vivid", "warm", "wise", "witty",
)
_ANIMALS: Final = (
    "badger", "bat", "bear", "beaver", "bison", "cobra", "crane", "crow", "deer", "dolphin",
    "eagle", "falcon", "ferret", "finch", "fox", "gecko", "heron", "ibis", "jaguar", "koala",
    "lemur", "lion", "llama", "lynx", "marten", "mole", "moose", "newt", "otter", "owl",
    "panda", "puffin", "quail", "raven", "robin", "salmon", "seal", "shrew", "sloth",
    "stoat", "swan", "tapir", "tiger", "toad", "walrus", "whale", "wolf", "wombat", "yak",
)


def validate_name(name: str) -> str:
    """Check a node name and return it in canonical (lowercase) form.

    A name is a DNS label: 1-63 characters from ``a-z``, ``0-9`` and ``-``, not starting
    or ending with a hyphen. Uppercase ASCII letters are accepted and lowercased.

    Raises:
        ValueError: the name breaks a rule; the message says which one.
    """
    if not isinstance(name, str):  # callers check untyped YAML/JSON and catch ValueError only
        raise ValueError(f"name must be a string, not {type(name).__name__}")  # noqa: TRY004
    if not name:
        raise ValueError("name is empty")
    # isascii() first: str.lower() maps some non-ASCII letters (KELVIN SIGN) to ASCII ones.
    bad = sorted({c for c in name if not c.isascii() or c.lower() not in _ALLOWED})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(
            f"name {name!r} contains {shown}; use only letters a-z, digits 0-9 and hyphens"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"name is {len(name)} characters long; the maximum is {MAX_NAME_LENGTH}"
        )
    if name.startswith("-") or name.endswith("-"):
        raise ValueError(f"name {name!r} must not start or end with a hyphen")
    return name.lower()


def generate_name(rng: random.Random | None = None) -> str:
    """Return a fresh friendly name such as ``brave-otter-3f2a``.

    Args:
        rng: source of randomness; defaults to the OS generator. Pass a seeded
            ``random.Random`` for reproducible names in tests.
    """
    r = rng if rng is not None else random.SystemRandom()
    return f"{r.choice(_ADJECTIVES)}-{r.choice(_ANIMALS)}-{r.getrandbits(16):04x}"
