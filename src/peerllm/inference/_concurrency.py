"""Trio helpers for the engine: stop checks for worker threads, nursery-group unwrapping."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NoReturn

import trio


def stop_check(stop: threading.Event) -> Callable[[], bool]:
    """A predicate for a thread started by ``trio.to_thread.run_sync``: True once ``stop``
    is set or the Trio task waiting for the thread has been cancelled.

    ``to_thread.run_sync`` (without abandon_on_cancel) cannot interrupt its thread; the
    thread polls this between tokens and returns early instead. A cancelled task also
    sets ``stop``, so later checks are cheap and code holding the event sees it.
    """

    def should_stop() -> bool:
        if stop.is_set():
            return True
        try:
            trio.from_thread.check_cancelled()
        except trio.Cancelled:
            stop.set()
            return True
        return False

    return should_stop


def reraise_unwrapped(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the single non-Cancelled exception of a nursery's group as itself.

    For context managers whose background task never raises (it reports failures through
    a channel): whatever the group holds came from the caller's own ``async with`` body,
    and the caller should get it back unchanged, as ``trio.as_safe_channel`` does.
    Nested groups (one nursery inside another) are looked through. Anything else
    (several errors, or only Cancelled) is re-raised as is.
    """
    others = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
    if len(others) == 1:
        exc = others[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context  # don't chain the group we are unwrapping
            del exc, context
    if not others and group.exceptions:
        raise group.exceptions[0]
    raise group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
