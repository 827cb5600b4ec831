"""The cluster bus's one periodic loop.

A :class:`Ticker` ticks every ``period_s``; each part of the bus registers,
before :meth:`Ticker.start`, what it does every ``n``-th tick
(:meth:`Ticker.every`). On a tick the due callbacks run one after the other,
in registration order, each awaited before the next. A callback that raises
is logged with its traceback on ``wsgate.cluster.ticker`` and counted in
:attr:`Ticker.failures` under its name, and the others still run: the
ticker fails open and never stops before :meth:`Ticker.close`.

Call order: :meth:`every` (any number of times), :meth:`start` (once, on a
running loop), :meth:`close` (awaits the loop; then the ticker is done).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, NamedTuple

from wsgate.cluster.ports import TickJob

__all__ = ["CLOSE_WAIT_S", "Ticker"]

log = logging.getLogger("wsgate.cluster.ticker")

CLOSE_WAIT_S: Final = 2.0
""":meth:`Ticker.close` waits at most this for a cancelled callback to end."""

class _Job(NamedTuple):
    every: int
    name: str
    callback: TickJob


class Ticker:
    """One periodic loop with its registered callbacks (see the module docstring);
    a :class:`~wsgate.cluster.ports.Schedule` for the bus's parts."""

    TASK_NAME: Final = "wsgate.cluster.ticker"
    """The name of the loop's task (tests look for it)."""

    def __init__(self, period_s: float) -> None:
        """``period_s`` is the time between ticks, measured from the end of the
        previous tick's callbacks (a slow backend stretches the period, never
        piles ticks up)."""
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self.period_s = period_s
        self._jobs: list[_Job] = []
        """Bounded by the registrations made before :meth:`start`; fixed afterwards."""
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.ticks = 0
        """Ticks done so far (a tick counts once its sleep ended, before its callbacks)."""
        self.failures: dict[str, int] = {}
        """Per callback name: the ticks on which it raised (one key per registration)."""

    def every(self, n: int, name: str, callback: TickJob) -> None:
        """Register ``callback`` for every ``n``-th tick, before :meth:`start`.

        Raises :class:`ValueError` for ``n < 1`` or a name already registered,
        :class:`RuntimeError` once started.
        """
        if self._started:
            raise RuntimeError("the ticker is started: register before start()")
        if n < 1:
            raise ValueError("n must be at least 1")
        if name in self.failures:
            raise ValueError(f"a tick job named {name!r} is already registered")
        self._jobs.append(_Job(n, name, callback))
        self.failures[name] = 0

    def schedule(self) -> list[tuple[str, int]]:
        """The registered ``(name, every n ticks)``, in the order they run."""
        return [(job.name, job.every) for job in self._jobs]

    def start(self) -> None:
        """Start the loop on the running event loop (once)."""
        if self._started:
            raise RuntimeError("the ticker was already started")
        self._started = True
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.TASK_NAME)

    async def close(self) -> None:
        """Stop the loop and wait (up to :data:`CLOSE_WAIT_S`) for it to end.

        A callback mid-await is cancelled and its cleanup runs before this
        returns. Safe to call more than once, or without :meth:`start`.
        """
        task, self._task = self._task, None
        self._started = True  # closed: no registration, no start after this
        if task is None:
            return
        task.cancel()
        _, stuck = await asyncio.wait([task], timeout=CLOSE_WAIT_S)
        if stuck:
            log.warning("cluster ticker still running %.1f s after close", CLOSE_WAIT_S)

    async def _run(self) -> None:
        while True:  # until cancelled by close()
            await asyncio.sleep(self.period_s)  # the period itself, not a synchronization
            self.ticks += 1
            for job in self._jobs:
                if self.ticks % job.every:
                    continue
                try:
                    await job.callback()
                except Exception:
                    self.failures[job.name] += 1
                    log.exception("cluster tick job %s failed; retrying on its next tick", job.name)
