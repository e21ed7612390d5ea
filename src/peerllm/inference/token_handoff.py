"""The generating thread's tokens into trio without a round trip per token.

``trio.from_thread.run(send.send, chunk)`` per token blocked the worker thread until
trio had spawned a task, run it and handed the result back through a queue: about
0.4 ms of CPU per token on this machine (measured with FakeBackend, 10 ms tokens), the
largest single cost of a served token. ``TokenHandoff`` is a bounded buffer instead:
the thread appends and, only when the consumer is parked waiting, wakes it with one
``run_sync_soon`` (which never waits for trio). Back-pressure is kept: a thread that is
``capacity`` items ahead of its consumer waits for room, so a slow consumer slows
generation down rather than growing a buffer.

Thread-safety rule: every field is guarded by ``_lock``; ``_ready`` (a trio.Event) is
only touched in trio's thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import trio

_T = TypeVar("_T")

STOP_POLL_S: Final = 0.05
"""How often a producer waiting for room polls its stop check (a timeout, a cancel or a
deleted model must end a generation whose consumer stopped reading)."""


class TokenHandoff(Generic[_T]):
    """Items from one producer thread (``put``) to one trio consumer (``receive``).

    The trio side may also ``put_nowait`` (the last item of a generation). Once the
    producer is done it calls ``close_producer`` (from trio); ``receive`` then raises
    ``trio.EndOfChannel`` when the buffer is empty. ``close_consumer`` tells the thread
    nobody reads any more: its ``put`` returns False from then on.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._items: deque[_T] = deque()
        self._waiting = False  # the consumer is parked on _ready
        self._wake_pending = False  # a wake-up is already on its way to trio
        self._producer_done = False
        self._consumer_gone = False
        self._token = trio.lowlevel.current_trio_token()
        self._ready = trio.Event()

    # -- the producer thread ---------------------------------------------------------

    def put(self, item: _T, should_stop: Callable[[], bool] | None = None) -> bool:
        """Queue ``item`` from the worker thread, waiting while the buffer is full.

        Returns False (and drops the item) once the consumer is gone, trio has stopped
        or, while waiting for room, ``should_stop`` says so (polled every STOP_POLL_S),
        so the caller can stop generating.
        """
        with self._lock:
            while len(self._items) >= self._capacity and not self._consumer_gone:
                self._room.wait(STOP_POLL_S)
                if should_stop is not None and should_stop():
                    return False
            if self._consumer_gone:
                return False
            self._items.append(item)
            wake = self._waiting and not self._wake_pending
            if wake:
                self._wake_pending = True
        if wake:
            try:
                self._token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                return False
        return True

    # -- trio's side -------------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    def put_nowait(self, item: _T) -> None:
        """Queue ``item`` from trio's thread (never waits; may exceed the capacity);
        dropped once the consumer is gone."""
        with self._lock:
            if not self._consumer_gone:
                self._items.append(item)
        self._ready.set()

    def close_producer(self) -> None:
        """No more items will come (trio's thread)."""
        with self._lock:
            self._producer_done = True
        self._ready.set()

    def close_consumer(self) -> None:
        """The consumer stops reading: wake and refuse the producer (any thread)."""
        with self._lock:
            self._consumer_gone = True
            self._items.clear()
            self._room.notify_all()

    def receive_nowait(self) -> _T:
        """The next item, or raise trio.WouldBlock (or EndOfChannel once all are read)."""
        with self._lock:
            if self._items:
                item = self._items.popleft()
                self._room.notify()
                return item
            if self._producer_done:
                raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> _T:
        """The next item; raises trio.EndOfChannel after the last one.

        Cancellation: safe; an item is either returned or stays queued.
        """
        waited = False
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    self._room.notify()
                    self._waiting = False
                    break
                if self._producer_done:
                    self._waiting = False
                    raise trio.EndOfChannel
                self._waiting = True
                if self._ready.is_set():
                    self._ready = trio.Event()
            await self._ready.wait()
            waited = True
        if not waited:
            # A schedule point, as a channel receive has (not a cancel point: the item
            # is ours); after a wait there was one already, and each costs a pass of
            # the event loop.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item
