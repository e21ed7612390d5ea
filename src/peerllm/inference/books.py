"""The model cache's memory books: reservations, eviction of idle models, freeing.

Each load reserves an estimate (memory.py) against the cache budget; when it does not fit,
idle models are evicted by the configured policy (or, after a hot swap, the model's own
previous version is waited for). A retired model is detached at once and freed, in a
task of the registry's nursery, once its last request is done. ``ModelLoader`` sees this
through its ``Reservations`` protocol; the registry owns the slots it is asked about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import trio

from ..errors import ModelLoadError
from .backend import ModelInstance
from .memory import CacheEntry, pick_victims
from .slots import LoadedModel, ModelSlot, gib

logger = logging.getLogger(__name__)

CLOSE_GRACE_S: Final = 30.0  # how long a retired model in use is waited for


class MemoryBooks:
    """Bytes reserved by loaded (and loading) models, within ``budget``."""

    def __init__(self, *, budget: int, available_ram: Callable[[], int], policy: str,
                 slots: Callable[[], Iterable[ModelSlot]]) -> None:
        self.budget = budget
        self.reserved = 0
        self.retiring: set[LoadedModel] = set()
        self.nursery: trio.Nursery | None = None  # the registry's, while it runs
        self._available_ram = available_ram
        self._policy = policy
        self._slots = slots  # the current version of each model (eviction candidates)

    def _idle_entries(self, exclude: ModelSlot) -> list[tuple[ModelSlot, CacheEntry]]:
        out = []
        for slot in self._slots():
            loaded = slot.loaded
            if slot is exclude or loaded is None or slot.pending or slot.job is not None:
                continue
            out.append((slot, CacheEntry(model_id=slot.spec.id, memory_bytes=loaded.memory_bytes,
                                         loaded_at=loaded.loaded_at, last_used=slot.last_used,
                                         uses=slot.uses)))
        return out

    def fit_limit(self, slot: ModelSlot) -> int:
        """Bytes a variant of ``slot``'s model may need: free RAM plus what evicting the
        idle models would free, within the cache budget."""
        evictable = sum(entry.memory_bytes for _, entry in self._idle_entries(slot))
        return min(self.budget, self._available_ram() + evictable)

    def reserve(self, slot: ModelSlot, need: int) -> list[LoadedModel]:
        """Reserve ``need`` bytes for ``slot``, retiring idle models as the policy says.

        Returns the models being freed to make room (wait for their ``freed``).

        Raises:
            ModelLoadError: the bytes cannot be found (more than the budget, or the
                other models are busy).
        """
        model_id = slot.spec.id
        if need > self.budget:
            raise ModelLoadError(model_id, f"needs ~{gib(need)}, more than the whole model "
                                 f"cache budget of {gib(self.budget)} (cache_size_gb)")
        short = self.reserved + need - self.budget
        victims = []
        if short > 0:
            # This model's previous version is freed once its last request is done (a
            # hot swap): wait for that rather than evict others or fail.
            victims = [m for m in slot.predecessors if not m.freed.is_set()]
            short -= sum(m.memory_bytes for m in victims)
        idle = self._idle_entries(slot)
        chosen = pick_victims([entry for _, entry in idle], need_bytes=short,
                              policy=self._policy)
        if chosen is None:
            raise ModelLoadError(model_id, f"needs ~{gib(need)} but only "
                                 f"{gib(max(0, self.budget - self.reserved))} of the model "
                                 "cache is free and the other models are busy")
        by_id = {s.spec.id: s for s, _ in idle}
        for entry in chosen:
            victim = by_id[entry.model_id]
            logger.info("evicting model %s (%s policy) to make room for %s", entry.model_id,
                        self._policy, model_id)
            loaded = victim.loaded
            assert loaded is not None
            victims.append(loaded)
            self.retire(victim)
        self.reserved += need
        return victims

    def unreserve(self, need: int) -> None:
        """Give back a reservation whose load did not happen."""
        self.reserved -= need

    def retire(self, slot: ModelSlot, *, then: trio.Event | None = None) -> None:
        """Detach the slot's model now; free it once its last request is done (then set
        ``then``)."""
        loaded = slot.loaded
        if loaded is None or self.nursery is None:
            return
        slot.loaded = None
        loaded.retired = True
        self.retiring.add(loaded)
        if loaded.busy == 0:
            loaded.drained.set()
        self.nursery.start_soon(self._free_when_drained, slot.spec.id, loaded, then,
                                name=f"free {slot.spec.id}")

    async def _free_when_drained(self, model_id: str, loaded: LoadedModel,
                                 then: trio.Event | None) -> None:
        try:
            await self._free(model_id, loaded)
        finally:
            if then is not None:
                then.set()

    async def _free(self, model_id: str, loaded: LoadedModel) -> None:
        # Shielded but bounded: at shutdown this task starts inside an already-cancelled
        # scope, and an unshielded wait would never free the model (aclose would hang).
        with trio.move_on_after(CLOSE_GRACE_S, shield=True) as scope:
            await loaded.drained.wait()
        if scope.cancelled_caught:
            logger.error("model %s still busy after %s s; not freeing it", model_id,
                         CLOSE_GRACE_S)
            return
        with trio.CancelScope(shield=True):  # a context is freed in milliseconds
            await trio.to_thread.run_sync(_close_all, loaded.instances())
        self.reserved -= loaded.memory_bytes
        self.retiring.discard(loaded)
        loaded.freed.set()
        logger.info("unloaded model %s", model_id)


def _close_all(instances: Sequence[ModelInstance]) -> None:
    for instance in instances:
        instance.close()
