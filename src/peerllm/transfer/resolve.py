"""Which manifest a download follows, when none was given: ask the sources.

With an expected digest, the first manifest for that digest wins (the others are not
waited for: their chunks are checked against it anyway). Without one, every source is
asked (each within the stall timeout) and the manifest most of them give wins. A source
whose manifest disagrees is dropped as ``bad_answer``: it holds another file, or lies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import trio

from ..errors import SourceFailed
from ..wire.blob import MAX_FILE_BYTES, Manifest
from .ports import ChunkSource, SizeHint

Drop = Callable[[str, str], None]
"""(source label, reason) -> None: the source is out of this download."""


async def resolve_manifest(sources: Sequence[ChunkSource], *, expected: str | None,
                           timeout_s: float, drop: Drop) -> Manifest | None:
    """The manifest to follow, or None when no source can say one (plain HTTP)."""
    answers: dict[str, Manifest] = {}
    pending = len(sources)
    settled = trio.Event()  # a manifest for the expected digest, or every source answered

    async def ask(src: ChunkSource) -> None:
        nonlocal pending
        try:
            _note(src, await _ask(src, timeout_s, expected, drop), answers, expected, settled)
        finally:
            pending -= 1
            if not pending:
                settled.set()

    if sources:
        async with trio.open_nursery() as nursery:
            for src in sources:
                nursery.start_soon(ask, src)
            await settled.wait()
            nursery.cancel_scope.cancel()  # the sources still thinking are not waited for
    if not answers:
        return None
    winner, _ = Counter(answers.values()).most_common(1)[0]
    for label, found in answers.items():
        if found != winner:
            drop(label, f"bad_answer: its manifest ({found.digest}) is not the majority's")
    return winner


async def _ask(src: ChunkSource, timeout_s: float, expected: str | None,
               drop: Drop) -> Manifest | None:
    try:
        with trio.move_on_after(timeout_s) as scope:
            found = await src.manifest()
    except SourceFailed as exc:
        drop(src.label, f"{exc.fault}: {exc.message}")
        return None
    if scope.cancelled_caught:
        drop(src.label, f"stalled: no manifest within {_seconds(timeout_s)}")
        return None
    if found is not None and expected is not None and found.digest != expected:
        drop(src.label, f"bad_answer: it offers {found.digest}, not {expected}")
        return None
    return found


def _note(src: ChunkSource, found: Manifest | None, answers: dict[str, Manifest],
          expected: str | None, settled: trio.Event) -> None:
    if found is None:
        return
    answers[src.label] = found
    if expected is not None:
        settled.set()


async def probe_size(sources: Sequence[ChunkSource], *, drop: Drop) -> int | None:
    """The file's size from the first source that can tell it without a manifest."""
    for src in sources:
        if isinstance(src, SizeHint):
            try:
                size = await src.content_length()
            except SourceFailed as exc:
                drop(src.label, f"{exc.fault}: {exc.message}")
                continue
            if size is not None and size > MAX_FILE_BYTES:
                # A file this big would need more chunks than a manifest may list.
                drop(src.label, f"bad_answer: it says the file is {size} bytes, more than "
                                f"the {MAX_FILE_BYTES} a model file may be")
                continue
            if size is not None:
                return size
    return None


def _seconds(s: float) -> str:
    return f"{s:g} s" if math.isfinite(s) else "ever"
