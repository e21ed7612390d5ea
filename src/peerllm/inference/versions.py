"""Model versions: ``id@<digest prefix>`` pins, and the old versions still draining.

A model id may name one version of its file (scheduling/pins.py: ``gemma@1a2b3c4d``).
Only the current version of a model takes new requests; a pin to any other version is
ModelNotFound, and its message names the version that is served.

When a model is replaced (hot swap) or removed, its old slot keeps the requests already
admitted; ``Drains`` holds those slots until their last request is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ..errors import ModelNotFound
from ..scheduling.pins import PIN_MIN_HEX as PIN_MIN_HEX
from ..scheduling.pins import pin_matches, split_pin
from ..wire.blob import digest_hex
from .slots import ModelSlot

SHOWN_HEX: Final = 8  # digits of the served version an error message shows


@dataclass(frozen=True)
class ModelRef:
    """A model id as a caller gave it: the id, and the digest prefix it is pinned to."""

    model_id: str
    pin: str | None = None  # lowercase hex, PIN_MIN_HEX..64 digits

    def __str__(self) -> str:
        return self.model_id if self.pin is None else f"{self.model_id}@{self.pin}"


def parse_ref(text: str) -> ModelRef:
    """``id`` or ``id@<hex prefix>``.

    Raises:
        ModelNotFound: the part after ``@`` is not 8-64 hex digits (the caller's mistake;
            the message says what a pin looks like).
    """
    try:
        model_id, pin = split_pin(text)
    except ValueError as exc:
        raise ModelNotFound(text, reason=str(exc)) from exc
    return ModelRef(model_id, pin)


def check_pin(ref: ModelRef, slot: ModelSlot) -> ModelSlot:
    """``slot`` (the current version of ``ref.model_id``) when the pin allows it.

    Raises:
        ModelNotFound: pinned to another version (or to one whose digest is not known
            yet); the message names the version that is served.
    """
    if ref.pin is None or pin_matches(ref.pin, slot.digest):
        return slot
    if slot.digest is None:
        served = "a version whose digest is not computed yet (try again shortly)"
    else:
        served = digest_hex(slot.digest)[:SHOWN_HEX]
    raise ModelNotFound(str(ref), reason=f"this version is not served here; "
                        f"{ref.model_id} is at {served}")


class Drains:
    """The old slots (replaced or removed versions) that still have admitted requests."""

    def __init__(self) -> None:
        self._slots: dict[str, list[ModelSlot]] = {}

    def add(self, slot: ModelSlot) -> None:
        self._slots.setdefault(slot.spec.id, []).append(slot)

    def discard(self, slot: ModelSlot) -> None:
        olds = self._slots.get(slot.spec.id, [])
        if slot in olds:
            olds.remove(slot)
        if not olds:
            self._slots.pop(slot.spec.id, None)

    def of(self, model_id: str) -> list[ModelSlot]:
        return list(self._slots.get(model_id, ()))

    def __iter__(self) -> Iterator[ModelSlot]:
        return iter([slot for olds in self._slots.values() for slot in olds])
