"""One node's audit log: ``Auditor`` writes JSON lines to a private, size-rotated file.

Each node owns its Auditor and its file handler; the handler is attached to no logger,
so two nodes in one process (the tests run many) can never write into each other's
file, and nothing here depends on process-global logging state. Every line is also
handed to the handlers of the ``peerllm.audit`` logger, if someone attached any (to
ship audit lines to syslog, say); it never reaches the root logger, so audit lines do
not repeat on the console.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from ..security_events import AuditEvent
from . import fields as f
from .throttle import FloodGate

logger = logging.getLogger(__name__)

AUDIT_LOGGER: Final = "peerllm.audit"
"""Attach a handler to this logger to receive every node's audit lines (message = the
JSON line; ``record.audit`` = the same line as a dict)."""
FILE_MODE: Final = 0o600
BURST_SECONDS: Final = 2.0
"""A kind may write this many seconds' worth of its rate at once."""


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 (and an older, wider one is
    narrowed): audit lines name clients, subjects and peers."""

    def _open(self) -> TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        if hasattr(os, "fchmod"):  # not on Windows, where the mode means little anyway
            os.fchmod(fd, FILE_MODE)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class Auditor:
    """Writes one node's audit lines (an ``AuditSink``); create with ``open_audit_log``.

    Args:
        handler: where lines go (None: only to ``peerllm.audit``'s handlers).
        node: this node's peer id, written in every line.
        rate_per_s: flood control per event kind (see ``audit.throttle``).
        wall: the wall clock for ``ts``; ``clock``: a monotonic one for flood control.
    """

    def __init__(self, handler: logging.Handler | None, *, node: str, rate_per_s: float,
                 wall: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._handler = handler
        self._node = node
        self._wall = wall
        self._clock = clock
        self._gate = FloodGate(rate_per_s=rate_per_s,
                               burst=max(1, round(rate_per_s * BURST_SECONDS)))
        self._lock = threading.Lock()  # emitters may sit in worker threads one day
        self._forward = logging.getLogger(AUDIT_LOGGER)

    def record(self, event: AuditEvent, /, **fields: f.Field) -> None:
        """Write one line (unless flood control drops it). Never raises."""
        try:
            self._record(event, fields)
        except Exception:  # an audit failure must not fail the audited request
            logger.debug("could not write an audit line for %s", event, exc_info=True)

    def _record(self, event: AuditEvent, fields: Mapping[str, object]) -> None:
        now = self._clock()
        with self._lock:
            due = self._gate.due(now)
            allowed = self._gate.allow(str(event), now)
        for s in due:
            self._emit(AuditEvent.SUPPRESSED, {"suppressed_event": s.kind, "count": s.count,
                                               "window_s": round(s.window_s, 3)})
        if allowed:
            self._emit(event, fields)

    def _emit(self, event: str, fields: Mapping[str, object]) -> None:
        line = f.build(ts=self._wall(), event=event, node=self._node, fields=fields)
        record = logging.LogRecord(AUDIT_LOGGER, logging.INFO, __file__, 0, f.dumps(line),
                                   None, None)
        record.__dict__["audit"] = line  # for structured handlers; LogRecord has no slot
        if self._handler is not None:
            self._handler.handle(record)
        for handler in self._forward.handlers:  # no propagation: never the console
            if record.levelno >= handler.level:
                handler.handle(record)

    def close(self) -> None:
        """Write the pending ``suppressed`` counts and close the file."""
        with self._lock:
            due = self._gate.due(self._clock(), flush=True)
        for s in due:
            self._emit(AuditEvent.SUPPRESSED, {"suppressed_event": s.kind, "count": s.count,
                                               "window_s": round(s.window_s, 3)})
        if self._handler is not None:
            self._handler.close()


@contextmanager
def open_audit_log(path: Path, *, node: str, max_bytes: int, backups: int,
                   rate_per_s: float) -> Iterator[Auditor]:
    """An Auditor writing to ``path`` (created 0600), rotated past ``max_bytes`` into
    ``path.1`` … ``path.<backups>``; closed when the block exits.

    Raises:
        ConfigError: the file cannot be opened (key ``audit.enabled``: fix the data dir's
            permissions or turn the audit log off).
    """
    try:
        handler = PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                             encoding="utf-8")
    except OSError as exc:
        raise ConfigError("audit.enabled",
                          f"cannot open the audit log {path}: {exc.strerror or exc}") from exc
    handler.setFormatter(logging.Formatter("%(message)s"))
    auditor = Auditor(handler, node=node, rate_per_s=rate_per_s)
    try:
        yield auditor
    finally:
        auditor.close()
