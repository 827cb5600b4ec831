"""Heartbeats on a coarse timer wheel: one loop timer per listener.

A ``loop.call_later`` per idle connection would cost a ``TimerHandle`` and a
heap entry each, re-armed on every check. Instead every connection sits in one
bucket of a wheel of ``n`` buckets; one timer advances the wheel by a tick
and asks each connection of the current bucket what to do next
(:meth:`Beating.heartbeat_due`): check again after half the heartbeat
interval, after the pong timeout, or never.

Accuracy is one tick (a quarter of the shorter delay). The timer runs only
while the wheel holds connections.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final, Protocol

__all__ = ["HB_IDLE", "HB_STOP", "HB_WAIT", "Beating", "HeartbeatWheel"]

_log: Final = logging.getLogger("wsgate.transport")

HB_STOP: Final = 0
"""Leave the wheel (closing or closed)."""
HB_IDLE: Final = 1
"""Check again after half the heartbeat interval."""
HB_WAIT: Final = 2
"""A ping went out: check again after the pong timeout."""


class Beating(Protocol):
    """A connection on the wheel; ``_hb_slot`` is the wheel's bookkeeping."""

    _hb_slot: int

    def heartbeat_due(self) -> int:
        """Called when the connection's bucket comes up; returns ``HB_*``."""
        ...


class HeartbeatWheel:
    """Buckets of connections, advanced by one timer.

    :meth:`add` after the handshake, :meth:`remove` when the connection is
    gone; the wheel calls ``heartbeat_due`` and re-files the connection.
    """

    __slots__ = ("_count", "_delays", "_handle", "_loop", "_pos", "_slots", "_tick")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval_s: float, timeout_s: float
    ) -> None:
        half = interval_s / 2
        tick = max(min(half, timeout_s) / 4, 0.005)
        idle_ticks = max(1, math.ceil(half / tick))
        wait_ticks = max(1, math.ceil(timeout_s / tick))
        self._loop = loop
        self._tick = tick
        self._delays = (0, idle_ticks, wait_ticks)
        self._slots: list[set[Beating]] = [set() for _ in range(max(idle_ticks, wait_ticks) + 1)]
        self._pos = 0
        self._count = 0
        self._handle: asyncio.TimerHandle | None = None

    def add(self, conn: Beating, kind: int = HB_IDLE) -> None:
        """File ``conn`` to be checked after the delay of ``kind``."""
        index = (self._pos + self._delays[kind]) % len(self._slots)
        self._slots[index].add(conn)
        conn._hb_slot = index
        self._count += 1
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._advance)

    def remove(self, conn: Beating) -> None:
        """Take ``conn`` off the wheel (idempotent)."""
        index = conn._hb_slot
        if index >= 0:
            conn._hb_slot = -1
            self._slots[index].discard(conn)
            self._count -= 1

    def stop(self) -> None:
        """Cancel the timer (the listener is gone)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _advance(self) -> None:
        self._handle = None
        self._pos = pos = (self._pos + 1) % len(self._slots)
        due = self._slots[pos]
        if due:
            self._slots[pos] = set()
            self._count -= len(due)
            for conn in due:
                conn._hb_slot = -1
                try:
                    kind = conn.heartbeat_due()
                except Exception:  # a bug in one connection must not stop the wheel
                    _log.exception("heartbeat check failed")
                    continue
                if kind:
                    self.add(conn, kind)
        if self._count and self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._advance)
