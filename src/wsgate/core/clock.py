"""The one piece of the event loop the core needs: timers.

An ``asyncio`` loop satisfies :class:`Scheduler`; tests may pass a manual
clock. The core never touches a socket and never awaits on the fan-out path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Scheduler", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[..., Any], /) -> TimerHandle: ...

    def time(self) -> float: ...
