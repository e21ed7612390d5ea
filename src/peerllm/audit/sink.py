"""The port every emitter holds: ``AuditSink.record(event, **fields)``, and the no-op one."""

from __future__ import annotations

from typing import Final, Protocol

from ..security_events import AuditEvent
from .fields import Field


class AuditSink(Protocol):
    """Where a component writes its audit lines (one node's audit log, or nowhere).

    ``record`` never raises and never blocks for long (one buffered file write), so it
    may be called anywhere, including in ``finally`` blocks and refusal paths.
    """

    def record(self, event: AuditEvent, /, **fields: Field) -> None: ...


class NullAudit:
    """Records nothing: the default of every constructor, and ``audit.enabled: false``."""

    def record(self, event: AuditEvent, /, **fields: Field) -> None:
        return None


NULL_AUDIT: Final = NullAudit()
