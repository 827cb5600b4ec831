"""Who watches the fan-out: the one owner of :attr:`wsgate.core.fanout.Fanout.taps`.

A *watcher* is a local tap (:mod:`wsgate.api.tap`: it queues for its
WebSocket) or a forwarder of another node's tap (:mod:`wsgate.cluster.taps`:
it publishes to that tap's subject). :class:`TapRegistry` keeps them and
points ``fanout.taps`` at its :meth:`~TapRegistry.offer` while any is
registered, and back to ``None`` when the last leaves, so a node no one taps
pays one attribute read per delivered action and nothing else.

Bounds: the registry holds what its callers add, and they are bounded —
``[tap] max_taps`` local taps per node, :data:`wsgate.cluster.taps.MAX_REMOTE`
forwarders; each is removed when its tap closes (or its lease runs out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from wsgate.core.delivery import Delivery, TargetKind

if TYPE_CHECKING:
    from wsgate.core.fanout import Fanout

__all__ = ["TapFilter", "TapRegistry", "Watcher"]


class TapFilter:
    """What one tap wants: one channel's deliveries, or those to or from one connection."""

    __slots__ = ("channel", "connection")

    def __init__(self, channel: str | None, connection: str | None) -> None:
        if (channel is None) == (connection is None):
            raise ValueError("a tap names one channel or one connection")
        self.channel = channel
        self.connection = connection

    def wants(self, d: Delivery) -> bool:
        """``d`` is for this tap's channel, or to or from its connection."""
        if self.channel is not None:
            return d.kind is TargetKind.CHANNEL and d.target == self.channel
        if d.kind is TargetKind.CONNECTION and d.target == self.connection:
            return True
        return d.origin is not None and d.origin.connectionId == self.connection


class Watcher(Protocol):
    """A tap as the registry sees it."""

    @property
    def filter(self) -> TapFilter: ...

    def offer(self, d: Delivery, offset: int) -> None:
        """Take ``d`` (``offset``: its channel offset, 0 for other kinds). Must not raise
        and never blocks: a full queue drops, a publish is at most once."""
        ...


class TapRegistry:
    """The watchers of one node's fan-out (see the module docstring)."""

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self.watchers: list[Watcher] = []
        """Bounded by the callers (module docstring); each leaves on :meth:`remove`."""

    def add(self, watcher: Watcher) -> None:
        self.watchers.append(watcher)
        self._fanout.taps = self.offer

    def remove(self, watcher: Watcher) -> None:
        """Forget ``watcher`` (absent: nothing); the last one resets ``fanout.taps``."""
        if watcher in self.watchers:
            self.watchers.remove(watcher)
        if not self.watchers:
            self._fanout.taps = None

    def offer(self, d: Delivery, offset: int) -> None:
        """The fan-out's hook while anyone taps: ``d`` to each watcher that wants it."""
        for watcher in self.watchers:
            if watcher.filter.wants(d):
                watcher.offer(d, offset)
