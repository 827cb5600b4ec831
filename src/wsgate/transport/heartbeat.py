"""Heartbeats on a coarse timer wheel: one loop timer per listener.

A ``loop.call_later`` per idle connection would cost a ``TimerHandle`` and a
heap entry each, re-armed on every check. Instead every connection sits in one
bucket of a wheel of ``n`` buckets; one timer advances the wheel by a tick
and asks each connection of the current bucket what to do next
(:meth:`Beating.heartbeat_due`): check again after half the heartbeat
interval, after the pong timeout, or never.

Accuracy is one tick (a quarter of the shorter delay). The timer runs only
while the wheel holds connections it checks.

The wheel is also the listener's one registry of its connections: a
connection is on it from the handshake until :meth:`HeartbeatWheel.remove`
(the socket is gone). One that needs no more checks (closing: ``HB_STOP``, or
its check raised) is *parked* in a set that is never checked, so
:meth:`~HeartbeatWheel.members` and ``len()`` count every connection not yet
gone, with one set entry each (bench/README.md, idle memory).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final, Generic, Protocol, TypeVar

__all__ = ["HB_IDLE", "HB_STOP", "HB_WAIT", "Beating", "HeartbeatWheel"]

_log: Final = logging.getLogger("wsgate.transport")

HB_STOP: Final = 0
"""Leave the wheel (closing or closed)."""
HB_IDLE: Final = 1
"""Check again after half the heartbeat interval."""
HB_WAIT: Final = 2
"""A ping went out: check again after the pong timeout."""

_OFF: Final = -1
"""``_hb_slot`` of a connection not on the wheel."""
_PARKED: Final = -2
"""``_hb_slot`` of a connection on the wheel that is no longer checked."""
_CHECKING: Final = -3
"""``_hb_slot`` while its ``heartbeat_due`` runs (out of every bucket)."""


class Beating(Protocol):
    """A connection on the wheel; ``_hb_slot`` is the wheel's bookkeeping."""

    _hb_slot: int

    def heartbeat_due(self) -> int:
        """Called when the connection's bucket comes up; returns ``HB_*``."""
        ...


B = TypeVar("B", bound=Beating)


class HeartbeatWheel(Generic[B]):
    """Buckets of connections, advanced by one timer.

    :meth:`add` after the handshake, :meth:`remove` when the connection is
    gone; the wheel calls ``heartbeat_due`` and re-files (or parks) the
    connection. ``len()`` and :meth:`members`: every connection added and not
    yet removed, parked or not.
    """

    __slots__ = ("_count", "_delays", "_handle", "_loop", "_parked", "_pos", "_slots", "_tick")

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
        self._slots: list[set[B]] = [set() for _ in range(max(idle_ticks, wait_ticks) + 1)]
        self._parked: set[B] = set()
        """Connections no longer checked, until :meth:`remove`."""
        self._pos = 0
        self._count = 0
        """Connections in the checked buckets (the timer runs while there are any)."""
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return self._count + len(self._parked)

    def members(self) -> list[B]:
        """Every connection on the wheel, parked or not (a copy: safe to close them)."""
        out = list(self._parked)
        for bucket in self._slots:
            out.extend(bucket)
        return out

    def add(self, conn: B, kind: int = HB_IDLE) -> None:
        """File ``conn`` to be checked after the delay of ``kind`` (not parked)."""
        index = (self._pos + self._delays[kind]) % len(self._slots)
        self._slots[index].add(conn)
        conn._hb_slot = index
        self._count += 1
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._advance)

    def remove(self, conn: B) -> None:
        """Take ``conn`` off the wheel, parked or not (idempotent)."""
        index = conn._hb_slot
        if index >= 0:
            conn._hb_slot = _OFF
            self._slots[index].discard(conn)
            self._count -= 1
        elif index == _PARKED:
            conn._hb_slot = _OFF
            self._parked.discard(conn)
        elif index == _CHECKING:  # gone during its own check: not re-filed
            conn._hb_slot = _OFF

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
                conn._hb_slot = _CHECKING
                try:
                    kind = conn.heartbeat_due()
                except Exception:  # a bug in one connection must not stop the wheel
                    _log.exception("heartbeat check failed")
                    kind = HB_STOP
                if conn._hb_slot != _CHECKING:
                    continue  # removed meanwhile
                if kind:
                    self.add(conn, kind)
                else:
                    conn._hb_slot = _PARKED
                    self._parked.add(conn)
        if self._count and self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._advance)
