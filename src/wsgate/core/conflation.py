"""Conflation: a hot channel delivers only the latest action per key per window.

A channel whose namespace sets ``conflate_ms`` (see
:mod:`wsgate.core.namespaces`) does not hand each action to its members at
once. :meth:`Conflation.offer` keeps the latest action per key (the value
at ``conflate_key`` in the payload, or one key for the whole channel) and
one timer per channel; when the window ends :meth:`Conflation.flush` gives
each key's latest action an offset, stores it in the history (which keeps
only the latest entry per key) and sends it to every member. So a member
gets at most one action per key per window, and always the last one.

A slow member (its transport paused: the peer reads slower than we write,
see :meth:`wsgate.transport.base.FlowSink.congested`) is not sent anything
at a flush; it is marked *behind* on the keys that changed. At the next
flush it is writable at, it gets the newest frame of each of those keys:
never a backlog, at most one frame per key, instead of the 4000 close a
slow consumer of an unconflated hot channel gets.

Bounds, and what frees them (per conflated channel):

- ``pending`` and ``frames`` hold at most :data:`MAX_KEYS` keys of at most
  :data:`MAX_KEY_CHARS` characters. An action whose key is new past that
  bound, or too long, is not conflated: :meth:`offer` returns ``False`` and
  the fan-out delivers it at once, as on an unconflated channel.
- ``behind`` holds, per member, a set of keys (so at most members × keys);
  a member's entry is dropped when it is served or leaves.
- one timer, armed by the first offer of a window or while a member is
  behind, and cancelled when the channel empties (:meth:`discard`, called by
  the gateway with the presence's), which frees the whole state.

In a cluster the broker assigned the offset before the action reaches this
node's fan-out (:meth:`offer_frame`): the node's history records it with its
key (:meth:`~wsgate.backends.base.RecentHistory.seen`), so it keeps the
latest per key too, and the local delivery is conflated the same way. The
backend's stream keeps every action (its last ``history.size``). Why
per-node conflation is the cluster's: docs/design.md "Conflation in a cluster".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from wsgate.backends.base import RecentHistory
from wsgate.core.clock import Scheduler
from wsgate.core.delivery import Delivery
from wsgate.core.pool import Channel, Latest, Window
from wsgate.protocol.envelope import Outbound, OutMeta, encode
from wsgate.typing import ConnectionId

# The window lives in wsgate.core.pool (a Channel holds one), re-exported here:
# the pool needs no import of this module.

__all__ = ["MAX_KEYS", "MAX_KEY_CHARS", "Conflation", "Window", "key_of"]

MAX_KEYS: Final = 1024
"""Keys one conflated channel holds; a new key past it is delivered unconflated."""
MAX_KEY_CHARS: Final = 128
"""A longer key is delivered unconflated."""

_NO_KEY: Final = ""


def key_of(payload: Any, path: tuple[str, ...] | None) -> str | None:
    """The conflation key of ``payload`` at ``path`` (``None`` path: the one channel key).

    A missing field (or a payload that is not an object) is the empty key; a
    key that is not text is its JSON; ``None`` when it is too long to conflate.
    """
    if path is None:
        return _NO_KEY
    value = payload
    if isinstance(value, msgspec.Raw):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return _NO_KEY
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return _NO_KEY
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= MAX_KEY_CHARS else None


class Conflation:
    """The conflated channels of one fan-out: their windows and timers.

    ``count`` is told the deliveries each flush made (the fan-out's counter).
    """

    __slots__ = ("_count", "_history", "_scheduler", "skipped", "superseded")

    def __init__(
        self, scheduler: Scheduler, history: RecentHistory, count: Callable[[int], None]
    ) -> None:
        self._scheduler = scheduler
        self._history = history
        self._count = count
        self.skipped = 0
        """Flushes a congested member was skipped at, marked behind (only grows)."""
        self.superseded = 0
        """Actions replaced within their window by a later one of the same key, so never
        sent (only grows; ``wsgate_conflation_superseded_total``)."""

    def offer(self, channel: Channel, delivery: Delivery) -> bool:
        """Hold ``delivery`` (for this node's conflated ``channel``) until the window ends.

        ``False`` when it cannot be conflated (a new key past the bounds): the
        caller delivers it at once.
        """

        key = key_of(delivery.payload, channel.options.conflate_key)
        return key is not None and self._hold(channel, delivery, None, 0, key)

    def offer_frame(
        self, channel: Channel, delivery: Delivery, data: bytes, offset: int, key: str | None
    ) -> bool:
        """:meth:`offer` for a cluster's delivery already framed (and recorded) as ``data``
        with ``offset``; ``key`` is its :func:`key_of` (``None``: not conflated)."""
        return key is not None and self._hold(channel, delivery, data, offset, key)

    def _hold(
        self, channel: Channel, delivery: Delivery, data: bytes | None, offset: int, key: str
    ) -> bool:
        options = channel.options
        window = channel.conflation
        if window is None:
            window = channel.conflation = Window()
        pending = window.pending
        if key in pending:
            self.superseded += 1
        elif key not in window.frames:
            if len(window.frames) + window.fresh >= MAX_KEYS:
                return False
            window.fresh += 1
        pending[key] = Latest(delivery, data, offset)
        if window.timer is None:
            window.timer = self._scheduler.call_later(
                options.conflate_ms / 1000, lambda: self.flush(channel)
            )
        return True

    def flush(self, channel: Channel) -> None:
        """End ``channel``'s window: record and send each key's latest (its timer calls this)."""
        window = channel.conflation
        if window is None:
            return
        window.timer = None
        frames = window.frames
        address = channel.address
        for key, latest in window.pending.items():
            data, offset = latest.data, latest.offset
            d = latest.delivery
            if data is None:
                offset = self._history.next_offset(address)
                meta = OutMeta(address, offset, from_=d.origin)
                data = encode(Outbound(d.type, d.payload, meta, d.error))
                self._history.append(address, offset, data, key)
            frames[key] = (offset, data, d.exclude)
        # In offset order (a cluster's latest per key may not arrive in it).
        changed = sorted(window.pending, key=lambda k: frames[k][0])
        window.pending.clear()
        window.fresh = 0
        sent, skipped = _send_window(channel, window, changed)
        self._count(sent)
        self.skipped += skipped
        if window.behind and channel.members:
            window.timer = self._scheduler.call_later(
                channel.options.conflate_ms / 1000, lambda: self.flush(channel)
            )

    def left(self, channel: Channel, cid: ConnectionId) -> None:
        """``cid`` left ``channel``: forget what it was behind on."""
        window = channel.conflation
        if window is not None:
            window.behind.pop(cid, None)

    def discard(self, channel: Channel) -> None:
        """The channel emptied: cancel its timer and free its window."""
        window = channel.conflation
        channel.conflation = None
        if window is not None and window.timer is not None:
            window.timer.cancel()


def _congested(sink: object) -> bool:
    """:meth:`~wsgate.transport.base.FlowSink.congested`, for sinks that have it (the
    transport's do; a test's recording sink may not)."""
    check = getattr(sink, "congested", None)
    return check is not None and bool(check())


def _send_window(channel: Channel, window: Window, changed: list[str]) -> tuple[int, int]:
    """Send each member the newest frame of the keys it needs; mark slow ones behind.

    Each member gets its frames in offset order. Returns the frames sent and the
    members skipped.
    """
    frames, behind = window.frames, window.behind
    sent = skipped = 0
    for cid, conn in channel.members.items():
        missed = behind.pop(cid, None)
        if _congested(conn.sink):
            if missed is None:
                missed = set()
            missed.update(changed)
            if missed:
                behind[cid] = missed
            skipped += 1
            continue
        keys = changed
        if missed is not None:  # it was behind: the newest of every key it missed, in order
            missed.update(changed)
            keys = sorted(missed, key=lambda k: frames[k][0])
        send = conn.sink.send
        for key in keys:
            _, data, exclude = frames[key]
            if exclude != cid:
                send(data)
                sent += 1
    return sent, skipped
