"""Section ``audit`` of NodeConfig: the audit log in the data dir (peerllm.audit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .validate import boolean, integer, positive_float, set_field

MIB: Final = 1024**2
AUDIT_FILE: Final = "audit.log"
"""The audit log's name in the data dir; rotated files are audit.log.1, .2, ..."""


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Section ``audit``: the JSON-lines audit log (``<data_dir>/audit.log``, 0600).

    Disk use is bounded by ``max_bytes * (backups + 1)`` (60 MiB by default).

    Raises:
        ConfigError: a value has the wrong type or is out of range.
    """

    enabled: bool = True
    max_bytes: int = 10 * MIB  # the file rotates when a line would take it past this
    backups: int = 5  # rotated files kept (audit.log.1 is the newest)
    lines_per_s: float = 50.0  # flood control: lines per second per event kind (burst 2x)

    def __post_init__(self) -> None:
        set_field(self, "enabled", boolean("audit.enabled", self.enabled))
        # A rotation needs room for at least a few lines; backups=0 would never rotate
        # (RotatingFileHandler then keeps appending to one file).
        set_field(self, "max_bytes", integer("audit.max_bytes", self.max_bytes, 4096))
        set_field(self, "backups", integer("audit.backups", self.backups, 1, 1000))
        set_field(self, "lines_per_s", positive_float("audit.lines_per_s", self.lines_per_s,
                                                      what="lines per second"))
