"""What the cluster bus's parts use from it: a small interface, not the bus.

The parts (:mod:`~wsgate.cluster.presence`, :mod:`~wsgate.cluster.query`,
:mod:`~wsgate.cluster.shared`) are given a :class:`BusPort` (the
:class:`~wsgate.cluster.bus.ClusterBus` is one) and a :class:`Schedule`
(the bus's :class:`~wsgate.cluster.ticker.Ticker`) at construction, so none
of them imports the bus back. The backend's handles (presence store, shared
limits, registry) are given to each part directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from wsgate.typing import NodeId

__all__ = ["BusPort", "Schedule", "TickJob"]

TickJob = Callable[[], Awaitable[None]]
"""What a part does on its ticks; raises what its backend raises (the ticker
logs and counts it, and runs it again on its next tick)."""


class BusPort(Protocol):
    """The bus as its parts see it."""

    @property
    def node(self) -> NodeId:
        """This node's id (the ``origin`` of the envelopes it publishes)."""
        ...

    def publish(self, subject: str, data: bytes) -> None:
        """Publish ready bytes (an encoded envelope, a routes change) on ``subject``,
        at most once; never raises for a broker that is away."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as one of the bus's tasks: a failure is logged, and the
        bus's ``close()`` cancels and awaits it before the backend closes."""
        ...


class Schedule(Protocol):
    """What a part is given to say what it does per tick of the bus's one loop."""

    def every(self, n: int, name: str, callback: TickJob) -> None:
        """Run ``callback`` on every ``n``-th tick (``n >= 1``) under the unique ``name``;
        only before the loop starts."""
        ...
