"""One timer for many deadlines: a coarse timer wheel over a :class:`Scheduler`.

:class:`TimerWheel` keeps each key's deadline (wall-clock Unix seconds) in a
slot of ``resolution_s`` and arms **one** scheduler timer, for the earliest
non-empty slot. When it fires, every key whose slot is due is removed and
given to ``fire``, in no particular order, never earlier than its deadline
and at most ``resolution_s`` (plus the loop's lag) after it.

Bounds: one entry per key (``set`` replaces); a key is freed by
:meth:`cancel` or when it fires. The heap of slot indices is rebuilt when
stale indices outnumber live slots, so it stays within ``2 * slots + 64``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Scheduler", "TimerWheel"]

K = TypeVar("K")


class _Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the wheel needs of an event loop (:class:`wsgate.core.clock.Scheduler`)."""

    def call_later(self, delay: float, callback: Callable[..., Any], /) -> _Handle: ...


class TimerWheel(Generic[K]):
    """Deadlines for many keys on one timer (see the module docstring).

    Use it on the scheduler's thread only. ``fire`` may call :meth:`set`
    (a next deadline for the same key) or :meth:`cancel`.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        fire: Callable[[K], None],
        *,
        resolution_s: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._scheduler = scheduler
        self._fire = fire
        self._res = resolution_s
        self._now = now
        self._slots: dict[int, tuple[int, set[K]]] = {}
        """Slot index -> (that index, the keys due in it)."""
        self._slot_of: dict[K, int] = {}
        self._heap: list[int] = []
        self._armed: tuple[int, _Handle] | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def set(self, key: K, deadline: float) -> None:
        """Fire ``key`` at ``deadline`` (replacing its previous deadline)."""
        self.cancel(key)
        slot = math.ceil(deadline / self._res)
        entry = self._slots.get(slot)
        if entry is None:
            entry = self._slots[slot] = (slot, set())
            heapq.heappush(self._heap, slot)
            if len(self._heap) > 2 * len(self._slots) + 64:
                self._heap = list(self._slots)
                heapq.heapify(self._heap)
        # The slot's own int object, not this call's: keys share one (memory per key).
        slot, keys = entry
        keys.add(key)
        self._slot_of[key] = slot
        self._arm()

    def cancel(self, key: K) -> None:
        """Forget ``key``'s deadline (nothing when it has none)."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        keys = self._slots[slot][1]
        keys.discard(key)
        if not keys:
            del self._slots[slot]

    def close(self) -> None:
        """Forget every deadline and disarm the timer."""
        self._slots.clear()
        self._slot_of.clear()
        self._heap.clear()
        if self._armed is not None:
            self._armed[1].cancel()
            self._armed = None

    def _earliest(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _arm(self) -> None:
        slot = self._earliest()
        armed = self._armed
        if slot is None or (armed is not None and armed[0] <= slot):
            return
        if armed is not None:
            armed[1].cancel()
        delay = max(0.0, slot * self._res - self._now())
        self._armed = (slot, self._scheduler.call_later(delay, self._tick))

    def _tick(self) -> None:
        self._armed = None
        due = math.floor(self._now() / self._res)
        for _ in range(len(self._heap) + 1):  # bounded: each pass pops one slot
            slot = self._earliest()
            if slot is None or slot > due:
                break
            heapq.heappop(self._heap)
            for key in self._slots.pop(slot)[1]:
                del self._slot_of[key]
                self._fire(key)
        self._arm()
