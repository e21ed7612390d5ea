"""This node's replication settings on disk: replica targets set by the operator, and
the model files the operator deleted here (never pulled again by replication).

One small JSON document, ``<data dir>/replication.json``, written atomically::

    {"version": 1, "replicas": {"<model id>": N, ...}, "declined": ["sha256:...", ...]}

A target set here (``peerllm replicate``) outranks models.yaml's ``replicas:``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from ..wire.blob import is_digest
from ..wire.nodeinfo import MAX_REPLICAS

logger = logging.getLogger(__name__)

SETTINGS_FILE: Final = "replication.json"
VERSION: Final = 1
MAX_DECLINED: Final = 4096  # digests remembered; the oldest are forgotten past this


def check_replicas(value: object) -> int:
    """A replica target: a whole number 0-MAX_REPLICAS (0 = no target).

    Raises:
        ValueError: naming the field ``replicas``.
    """
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_REPLICAS:
        raise ValueError(f"replicas: must be a whole number 0-{MAX_REPLICAS}, got {value!r}")
    return value


class ReplicaSettings:
    """The settings file, read once at start and rewritten on every change."""

    def __init__(self, path: Path) -> None:
        """Raises ConfigError: the file exists but is not a settings document (the
        operator's to fix or delete; the message names the file and the field)."""
        self.path = path
        self._replicas: dict[str, int] = {}
        self._declined: list[str] = []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read the replication settings: {exc}") \
                from exc
        try:
            self._replicas, self._declined = _parse(json.loads(text))
        except ValueError as exc:  # JSONDecodeError is one
            raise ConfigError(str(path), f"{exc} (fix or delete the file)") from exc

    def replicas(self, model_id: str) -> int | None:
        """The target the operator set for ``model_id`` here, or None."""
        return self._replicas.get(model_id)

    def targets(self) -> dict[str, int]:
        return dict(self._replicas)

    def set_replicas(self, model_id: str, replicas: int) -> None:
        """Set (and persist) the target for ``model_id``. Raises ValueError (bad N),
        OSError (the file cannot be written; the change holds until restart anyway)."""
        self._replicas[model_id] = check_replicas(replicas)
        self._save()

    def declined(self) -> frozenset[str]:
        return frozenset(self._declined)

    def decline(self, digest: str) -> None:
        """Never replicate ``digest`` to this node again (the operator deleted it here)."""
        if digest in self._declined:
            return
        self._declined.append(digest)
        del self._declined[:-MAX_DECLINED]
        self._save()

    def accept(self, digests: frozenset[str]) -> None:
        """The operator brought these back (pulled them here): no longer declined."""
        if digests & set(self._declined):
            self._declined = [d for d in self._declined if d not in digests]
            self._save()

    def _save(self) -> None:
        doc = {"version": VERSION, "replicas": dict(sorted(self._replicas.items())),
               "declined": self._declined}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)  # readers see the old document or the new, never half


def _parse(doc: object) -> tuple[dict[str, int], list[str]]:
    # A wrong shape is bad data like bad JSON: ValueError for all (TRY004 wants TypeError).
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")  # noqa: TRY004
    if doc.get("version") != VERSION:
        raise ValueError(f"version: expected {VERSION}, got {doc.get('version')!r}")
    raw = doc.get("replicas", {})
    if not isinstance(raw, dict):
        raise ValueError("replicas: expected an object of model id -> N")  # noqa: TRY004
    replicas = {}
    for model_id, n in raw.items():
        try:
            replicas[str(model_id)] = check_replicas(n)
        except ValueError as exc:
            raise ValueError(f"replicas.{model_id}: {exc}") from exc
    declined = doc.get("declined", [])
    if not isinstance(declined, list) or not all(isinstance(d, str) and is_digest(d)
                                                 for d in declined):
        raise ValueError("declined: expected a list of sha256:<hex> digests")
    return replicas, list(declined)
