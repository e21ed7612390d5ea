"""A node's load (running, queued, capacity): one type for node-info and infer ``accepted``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._fields import MapReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """Generations running and queued on a node, and how many it runs at once.

    In node-info it is the node's load when the NodeInfo was issued; in ``accepted`` the
    server's load just after admitting that request (the request included).
    """

    active: int
    queued: int
    capacity: int


def load_to_map(load: Load) -> dict[str, Any]:
    return {"active": load.active, "queued": load.queued, "capacity": load.capacity}


def read_load(r: MapReader, *, max_count: int) -> Load:
    """The Load in map ``r``; each count must be in 0..``max_count`` (the protocol's cap).

    Raises:
        FieldError: a count is missing, not an int, or out of range.
    """
    return Load(
        active=r.get_int("active", hi=max_count),
        queued=r.get_int("queued", hi=max_count),
        capacity=r.get_int("capacity", hi=max_count),
    )
