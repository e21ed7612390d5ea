"""Which manifest and model meta a pull follows: asked of the holders at once, most win.

A holder could answer with the right digest but false chunk digests; followed, every
honest source would then look like it sends bad chunks and the pull would fail. So the
holders are asked in parallel (a few at a time, each within a deadline) and the manifest
most of them give is followed; a holder whose manifest differs is left out as a bad
answer. Honest holders of one file give the same manifest (the chunk size is fixed).
Once one holder has answered, the others get AGREE_GRACE_S more: a holder that has just
gone (its dial still timing out) must not hold the pull up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

import trio

from ..errors import SourceFailed
from ..wire import blob as wb
from .naming import meta_problem
from .pull_ports import BlobPeers, Holder

DESCRIBE_TIMEOUT_S: Final = 10.0
"""How long one holder may take to describe the file."""
DESCRIBE_AT_ONCE: Final = 4
"""Holders asked at the same time (each costs a stream)."""
AGREE_GRACE_S: Final = 1.0
"""How long the other holders may still answer once one has (live ones take ms)."""

Described = tuple[wb.Manifest | None, wb.ModelMeta | None, dict[str, str]]


async def describe_holders(peers: BlobPeers, holders: Sequence[Holder], ref: str, *,
                           timeout_s: float = DESCRIBE_TIMEOUT_S) -> Described:
    """The majority's manifest and its meta, and why each holder left out was.

    None, None when no holder described it (every one is in the reasons, except the
    busy ones: busy now is still a source for later chunks).
    """
    reasons: dict[str, str] = {}
    answers: dict[str, tuple[wb.Manifest, wb.ModelMeta | None]] = {}
    limiter = trio.CapacityLimiter(DESCRIBE_AT_ONCE)
    asked = list(dict.fromkeys(h.peer_id for h in holders))
    first, everyone = trio.Event(), trio.Event()
    left = len(asked)

    async def ask(peer_id: str) -> None:
        nonlocal left
        try:
            await _ask(peer_id)
        finally:
            left -= 1
            if not left:
                everyone.set()
                first.set()  # nobody answered: nothing more to wait for

    async def _ask(peer_id: str) -> None:
        async with limiter:
            with trio.move_on_after(timeout_s) as scope:
                try:
                    manifest, meta = await peers.describe(peer_id, ref)
                except SourceFailed as exc:
                    if exc.fault != "busy":
                        reasons[peer_id] = f"{exc.fault}: {exc.message}"
                    return
            if scope.cancelled_caught:
                reasons[peer_id] = f"stalled: no answer within {timeout_s:g} s"
                return
            problem = meta_problem(meta)
            if problem is not None:
                reasons[peer_id] = f"bad_answer: {problem}"
                return
            answers[peer_id] = (manifest, meta)
            first.set()

    if asked:
        async with trio.open_nursery() as nursery:
            for peer_id in asked:
                nursery.start_soon(ask, peer_id)
            await first.wait()  # the first answer, or every holder failed
            with trio.move_on_after(AGREE_GRACE_S):
                await everyone.wait()
            # Holders still thinking stay sources: the download judges them by their chunks.
            nursery.cancel_scope.cancel()
    if not answers:
        return None, None, reasons
    votes = Counter(manifest for manifest, _ in answers.values())
    winner, _ = votes.most_common(1)[0]
    meta = None
    for peer_id, (manifest, its_meta) in answers.items():
        if manifest != winner:
            reasons[peer_id] = (f"bad_answer: its manifest of {manifest.digest} is not the "
                                f"one {votes[winner]} other holder(s) gave")
        elif meta is None:
            meta = its_meta
    return winner, meta, reasons
