"""Usage accounting: per-subject, per-peer and per-model totals of every request this node
ran or placed, kept across restarts, with the receipts that prove the peers' share.

Three kinds of record (protocols/auth.md, "Usage"):

* ``local`` — our engine served our own caller (``peer`` is us, ``served_by``);
* ``forwarded`` — a peer served our caller (``peer`` served it; ``receipt`` is the one
  it signed, ``verified`` whether it checked out);
* ``served`` — our engine served a peer's forwarded request (``peer`` forwarded it;
  ``receipt`` is the one we signed and sent back).

Receipt-bearing records go to the ``receipts`` journal and local ones to ``local``
(``<data dir>/usage/``), each rotated by size; what rotates out is folded into the
journal's base totals, so totals are exact after any restart while the last files'
worth of receipts stay on disk as proof.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

from .journal import DEFAULT_KEEP, DEFAULT_MAX_BYTES, Journal, Json

logger = logging.getLogger(__name__)

Kind = Literal["local", "forwarded", "served"]
KINDS: Final[tuple[Kind, ...]] = ("local", "forwarded", "served")
DIMENSIONS: Final = ("subject", "peer", "model")
MAX_KEYS: Final = 10_000  # per dimension; past it new keys count under OTHER
OTHER: Final = "(other)"
RECENT: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord:
    """One finished request as this node saw it."""

    kind: Kind
    at: float  # wall-clock seconds when it finished
    subject: str
    token_id: str | None
    model: str
    peer: str
    request_id: int | None
    tokens_in: int
    tokens_out: int
    gen_s: float  # the serving engine's wall seconds (see auth/receipts.py)
    receipt: str | None = None
    verified: bool = False

    @property
    def relation(self) -> str:
        """How ``peer`` relates to the request: it served it, or it forwarded it to us."""
        return "forwarded_by" if self.kind == "served" else "served_by"

    @classmethod
    def from_json(cls, doc: Json) -> UsageRecord:
        """Raises KeyError, TypeError or ValueError for a line that is not a record."""
        kind = doc["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        return cls(kind=kind, at=float(doc["at"]), subject=str(doc["subject"]),
                   token_id=None if doc.get("token_id") is None else str(doc["token_id"]),
                   model=str(doc["model"]), peer=str(doc["peer"]),
                   request_id=None if doc.get("request_id") is None
                   else int(doc["request_id"]),
                   tokens_in=int(doc["tokens_in"]), tokens_out=int(doc["tokens_out"]),
                   gen_s=float(doc["gen_s"]), receipt=doc.get("receipt"),
                   verified=bool(doc.get("verified", False)))


@dataclass(slots=True)
class Usage:
    """Totals of some requests."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    gen_s: float = 0.0

    def add(self, rec: UsageRecord) -> None:
        self.requests += 1
        self.tokens_in += rec.tokens_in
        self.tokens_out += rec.tokens_out
        self.gen_s += rec.gen_s

    def merge(self, other: Usage) -> None:
        self.requests += other.requests
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.gen_s += other.gen_s

    def to_json(self) -> Json:
        return {"requests": self.requests, "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out, "gen_s": round(self.gen_s, 6)}

    @classmethod
    def from_json(cls, doc: Any) -> Usage:
        return cls(requests=int(doc["requests"]), tokens_in=int(doc["tokens_in"]),
                   tokens_out=int(doc["tokens_out"]), gen_s=float(doc["gen_s"]))


class Totals:
    """Usage by subject, by (relation, peer) and by model."""

    def __init__(self) -> None:
        self._by: dict[str, dict[str, Usage]] = {d: {} for d in DIMENSIONS}

    def add(self, rec: UsageRecord) -> None:
        for dim, key in (("subject", rec.subject), ("model", rec.model),
                         ("peer", f"{rec.relation} {rec.peer}")):
            self._bucket(dim, key).add(rec)

    def merge(self, other: Totals) -> None:
        for dim, rows in other._by.items():
            for key, usage in rows.items():
                self._bucket(dim, key).merge(usage)

    def _bucket(self, dim: str, key: str) -> Usage:
        rows = self._by[dim]
        if key not in rows and len(rows) >= MAX_KEYS:
            key = OTHER
        return rows.setdefault(key, Usage())

    def rows(self, by: str) -> list[Json]:
        """One JSON row per key of dimension ``by``, busiest first.

        Raises:
            ValueError: ``by`` is not one of DIMENSIONS.
        """
        if by not in DIMENSIONS:
            raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
        out = []
        for key, usage in self._by[by].items():
            if by == "peer":
                relation, _, peer = key.partition(" ")
                head: Json = {"peer": peer, "relation": relation}
            else:
                head = {by: key}
            out.append({**head, **usage.to_json()})
        return sorted(out, key=lambda r: (-r["requests"], str(r.get(by)), str(r)))

    def to_json(self) -> Json:
        return {dim: {k: u.to_json() for k, u in rows.items()} for dim, rows in self._by.items()}

    @classmethod
    def from_json(cls, doc: Json) -> Totals:
        """Raises KeyError, TypeError or ValueError for a malformed document."""
        totals = cls()
        for dim in DIMENSIONS:
            for key, usage in dict(doc.get(dim, {})).items():
                totals._bucket(dim, str(key)).merge(Usage.from_json(usage))
        return totals


def _fold(base: Json, lines: list[Json]) -> Json:
    totals = Totals.from_json(base)
    for line in lines:
        try:
            totals.add(UsageRecord.from_json(line))
        except (KeyError, TypeError, ValueError):
            continue  # was skipped when loaded too
    return totals.to_json()


class UsageLedger:
    """This node's usage totals and the records behind them.

    ``directory`` None keeps everything in memory only (tests, library users who want
    no files). Writing is best effort: a full disk is logged, totals keep counting.
    """

    def __init__(self, directory: Path | None, *, max_file_bytes: int = DEFAULT_MAX_BYTES,
                 keep_files: int = DEFAULT_KEEP) -> None:
        self.directory = directory
        self._totals = Totals()
        self._recent: deque[UsageRecord] = deque(maxlen=RECENT)
        self._journals: dict[str, Journal] = {}
        if directory is None:
            return
        for stem in ("receipts", "local"):
            journal = Journal(directory, stem, fold=_fold, max_bytes=max_file_bytes,
                              keep=keep_files)
            self._journals[stem] = journal
            self._load(journal)

    def _load(self, journal: Journal) -> None:
        base, lines = journal.load()
        try:
            self._totals.merge(Totals.from_json(base))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ignoring malformed usage totals in %s: %s", self.directory, exc)
        for line in lines:
            try:
                self._totals.add(UsageRecord.from_json(line))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("skipping a malformed usage record in %s: %s",
                               self.directory, exc)

    def record(self, rec: UsageRecord) -> None:
        """Count ``rec`` and keep it (receipts journal if it has a receipt, else local)."""
        self._totals.add(rec)
        self._recent.append(rec)
        journal = self._journals.get("local" if rec.receipt is None else "receipts")
        if journal is None:
            return
        try:
            journal.append(asdict(rec))
        except OSError as exc:
            logger.error("cannot save a usage record in %s: %s (still counted)",
                         self.directory, exc)

    def rows(self, by: str) -> list[Json]:
        """Totals by ``by`` (subject, peer or model); see Totals.rows."""
        return self._totals.rows(by)

    def recent(self) -> list[UsageRecord]:
        """The last records counted since start, oldest first."""
        return list(self._recent)

    def files(self) -> list[Path]:
        """Every journal file kept (receipts first), oldest first."""
        return [f for j in self._journals.values() for f in j.files()]
