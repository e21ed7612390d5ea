"""Append-only JSON-lines files, rotated by size, whose dropped files are folded into a base.

A journal is ``<stem>-<generation>.jsonl`` files in one folder: lines are appended to
the newest; past ``max_bytes`` the next line starts a new generation; past ``keep``
files the oldest is *folded*: the caller's summary of its lines is merged into
``<stem>-base.json`` (written atomically with the generation it covers), then the file
is removed. Loading replays only generations newer than the base's, so a crash between
the two steps neither loses nor double-counts a file. A torn last line (a crash while
appending) is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from ..identity import atomic_write

logger = logging.getLogger(__name__)

Json = dict[str, Any]
Fold = Callable[[Json, list[Json]], Json]
"""(base summary, lines of the file being dropped) -> the new base summary."""

DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024
DEFAULT_KEEP: Final = 4


class Journal:
    """One rotated JSON-lines journal (see the module docstring)."""

    def __init__(self, directory: Path, stem: str, *, fold: Fold,
                 max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1 or max_bytes < 1:
            raise ValueError("a journal keeps at least one file of at least one byte")
        self._dir = directory
        self._stem = stem
        self._fold = fold
        self._max = max_bytes
        self._keep = keep
        self._file_re = re.compile(rf"{re.escape(stem)}-(\d{{6,}})\.jsonl")
        self._base_path = directory / f"{stem}-base.json"
        self._through = 0  # generations <= this are in the base
        self._base: Json = {}
        self._gen = 1

    def load(self) -> tuple[Json, Iterator[Json]]:
        """The base summary and every line kept since, oldest first (call once, first).

        Error handling: an unreadable base or file is logged and skipped; the journal
        goes on appending after the newest generation found.
        """
        try:
            doc = json.loads(self._base_path.read_text(encoding="utf-8"))
            self._through = int(doc["through"])
            self._base = dict(doc["summary"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable %s: %s", self._base_path, exc)
        gens = self._generations()
        for gen in [g for g in gens if g <= self._through]:  # folded, not yet removed
            self._path(gen).unlink(missing_ok=True)
        self._gen = max([g for g in gens if g > self._through], default=self._through + 1)
        if self._torn(self._path(self._gen)):
            self._gen += 1  # never glue a new line onto a torn one
        return self._base, self._replay([g for g in gens if g > self._through])

    def append(self, line: Json) -> None:
        """Append one line, rotating and folding as needed.

        Raises:
            OSError: the line could not be written (the caller decides how loudly).
        """
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        path = self._path(self._gen)
        if path.exists() and path.stat().st_size + len(data) > self._max:
            self._gen += 1
            path = self._path(self._gen)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with path.open("ab") as fh:
            fh.write(data)
        gens = self._generations()
        while len(gens) > self._keep:
            self._fold_oldest(gens.pop(0))

    def files(self) -> list[Path]:
        """The journal's files, oldest first."""
        return [self._path(g) for g in self._generations()]

    def _fold_oldest(self, gen: int) -> None:
        lines = list(self._read(gen))
        self._base = self._fold(self._base, lines)
        doc = {"through": gen, "summary": self._base}
        atomic_write(self._base_path, json.dumps(doc, indent=1).encode())
        self._through = gen
        self._path(gen).unlink(missing_ok=True)

    @staticmethod
    def _torn(path: Path) -> bool:
        try:
            with path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                return fh.read(1) != b"\n"
        except OSError:  # missing or empty
            return False

    def _path(self, gen: int) -> Path:
        return self._dir / f"{self._stem}-{gen:06d}.jsonl"

    def _generations(self) -> list[int]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("cannot list %s: %s", self._dir, exc)
            return []
        return sorted(int(m.group(1)) for n in names if (m := self._file_re.fullmatch(n)))

    def _replay(self, gens: list[int]) -> Iterator[Json]:
        for gen in gens:
            yield from self._read(gen)

    def _read(self, gen: int) -> Iterator[Json]:
        path = self._path(gen)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            logger.warning("cannot read %s: %s", path, exc)
            return
        for n, text in enumerate(raw.splitlines(), 1):
            try:
                line = json.loads(text)
            except ValueError:
                logger.warning("skipping unreadable line %d of %s", n, path)
                continue
            if isinstance(line, dict):
                yield line
