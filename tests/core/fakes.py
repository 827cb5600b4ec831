"""Test doubles for the core's two edges: a recording sink and a manual clock.

The core is Sans-I/O; these let its tests run without sockets or sleeps.
The transport itself is tested with real sockets in ``tests/transport``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import msgspec


class RecordingSink:
    """A Sink that keeps what was sent, decoded, and how it was closed."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.last_active = 1_700_000_000.5
        """The upgrade's time, as a transport's sink gives it before the first message."""

    def send(self, data: bytes) -> None:
        if self.closed is None:
            self.frames.append(data)

    def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    @property
    def actions(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(f) for f in self.frames]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["type"] == type_]

    def take(self) -> list[dict[str, Any]]:
        out = self.actions
        self.frames.clear()
        return out


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A Scheduler whose time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, _Timer, Callable[[], Any]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], /) -> _Timer:
        timer = _Timer()
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), timer, callback))
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._heap and self._heap[0][0] <= self.now:
            _, _, timer, callback = heapq.heappop(self._heap)
            if not timer.cancelled:
                callback()

    @property
    def pending(self) -> int:
        return sum(1 for entry in self._heap if not entry[2].cancelled)
