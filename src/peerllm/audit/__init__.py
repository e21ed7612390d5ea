"""The audit log: one JSON line per security-relevant event, in the data dir's audit.log.

How events flow. Nothing emits through a global: each node opens its own ``Auditor``
(``open_audit_log``, in node.py's ``open_node``) and the composition root hands it, as
the small ``AuditSink`` port, to whatever emits — the network-key check, the DHT validator,
the node-info client (p2p/), the serving side (mesh/), the API (api/, through
``node.audit``). Emitters call the typed functions of ``audit.events`` (one per event:
its fields are one fact); constructors default to ``NULL_AUDIT``, so code and tests that
do not care keep working unchanged.

Why explicit passing rather than a process-wide ``logging.getLogger("peerllm.audit")``
with handlers: several nodes run in one process (the tests, embedders), each with its
own data dir. A global logger would need every line to find "its" node's handler again
(by logger name, contextvars, or a filter), and a line emitted outside that context
would land in the wrong node's file or none. With a port per node that mistake cannot
be written. The ``peerllm.audit`` logger still receives every line (see ``log``), as an
extension point, not as the routing mechanism.

Flood control: each event kind is rate-limited (``audit.lines_per_s``, bursts of twice
that), dropped lines are counted into one ``suppressed`` line per kind and second
(``audit.throttle``); the file rotates at ``audit.max_bytes`` with ``audit.backups``
old files, so the log's disk use is bounded whatever a peer does.

A line: ``{"ts": "2026-01-02T03:04:05.678Z", "event": "inference", "node": "<peer id>",
...fields}`` — ASCII JSON, strings cut to 256 characters (``audit.fields``).
"""

from . import events as events
from .fields import Field as Field
from .log import AUDIT_LOGGER as AUDIT_LOGGER
from .log import Auditor as Auditor
from .log import open_audit_log as open_audit_log
from .sink import NULL_AUDIT as NULL_AUDIT
from .sink import AuditSink as AuditSink
from .sink import NullAudit as NullAudit

__all__ = ["AUDIT_LOGGER", "NULL_AUDIT", "AuditSink", "Auditor", "Field", "NullAudit",
           "events", "open_audit_log"]
