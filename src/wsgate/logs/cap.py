"""A per-window cap on one kind of event line, with one summary line for what it held back.

A reconnect storm (a node died, its clients come here at once) writes one
``connected`` line per handshake: formatting and writing it was 12 % of the
gateway's CPU per signed-in handshake (bench/README.md, "Reconnect storms").
:class:`LineCap` lets the first ``per_window`` lines of a window through; the
rest are counted, and when the window ends one ``suppressed`` line says how
many (``of``: the event, ``count``, ``window_s``). Nothing is lost silently,
and a quiet node writes every line as before.

Lifecycle::

    cap = LineCap("connected", per_window=100)   # 0: no cap, every line
    if cap.allow():                              # once per line, on the loop
        event("connected", ...)
    ...                                          # a window with held lines ends:
                                                 # one `suppressed` line, written by
                                                 # a timer, or by the next allow()

Cost: one clock read and two integer compares per line; at most one timer
per window, and only in a window that held a line. Bounded: two counters and
at most one pending timer. Call from the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from wsgate.logs.events import event

__all__ = ["SUPPRESSED", "LineCap"]

SUPPRESSED: Final = "suppressed"
"""The summary line's event name."""


class LineCap:
    """At most ``per_window`` lines of the event ``name`` per ``window_s`` seconds.

    ``per_window == 0`` disables the cap (:meth:`allow` is always ``True``).
    The window starts at the first line after the previous one ended.
    """

    __slots__ = ("_clock", "_held", "_left", "_timer", "_until", "name", "per_window", "window_s")

    def __init__(
        self,
        name: str,
        per_window: int,
        window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._until = float("-inf")
        """When the current window ends (clock time)."""
        self._left = 0
        """Lines the current window may still write."""
        self._held = 0
        """Lines held back in the current window (written as one summary)."""
        self._timer: asyncio.TimerHandle | None = None
        """Writes the summary at the window's end; set only while ``_held``."""

    def allow(self) -> bool:
        """Whether to write this line; ``False``: it was counted for the summary."""
        if not self.per_window:
            return True
        now = self._clock()
        if now >= self._until:
            if self._held:
                self.summarize()
            self._until = now + self.window_s
            self._left = self.per_window - 1
            return True
        if self._left:
            self._left -= 1
            return True
        if not self._held:
            delay = self._until - now
            self._timer = asyncio.get_running_loop().call_later(delay, self.summarize)
        self._held += 1
        return False

    def summarize(self) -> None:
        """Write the ``suppressed`` line for the lines held so far (none: nothing)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        held, self._held = self._held, 0
        if held:
            event(SUPPRESSED, logging.INFO, of=self.name, count=held, window_s=self.window_s)
