"""In-memory backends: the default for one node, and the reference for tests."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from wsgate.backends.base import Replay
from wsgate.typing import ChannelAddress

__all__ = ["MemoryHistory", "MemoryRateLimits"]


class _Stream:
    __slots__ = ("base", "entries", "evicted", "key_at", "keys", "size", "top", "ttl")

    def __init__(self, base: int, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self.keys: dict[str, int] = {}
        """A conflated channel's key → the offset of its entry; ``key_at`` the reverse.
        Both hold only entries still in ``entries`` (at most ``size``), freed with it."""
        self.key_at: dict[int, str] = {}
        self.base = base
        """Offsets at or above this were all seen by this stream."""
        self.top = base
        self.evicted = 0
        """Highest offset evicted (0: none yet): recovery needs ``since >= evicted``."""
        self.entries: deque[tuple[int, bytes]] = deque(maxlen=size)


def _put(stream: _Stream, offset: int, data: bytes, key: str | None) -> None:
    """Add an entry to a stream holding some (``size > 0``); with a ``key``, in place of
    that key's earlier entry, which is removed (nothing is lost, so no eviction mark).

    The search for it starts at the newest end: a conflated channel's entries are one per
    key, the newest of the window, so it pays O(keys), not O(size), per action recorded
    (a cluster records every action it receives)."""
    entries = stream.entries
    keys, key_at = stream.keys, stream.key_at
    if key is not None:
        older = keys.get(key)
        if older is not None:
            del key_at[older]
            for i in range(len(entries) - 1, -1, -1):
                if entries[i][0] == older:
                    del entries[i]
                    break
        keys[key] = offset
        key_at[offset] = key
    if len(entries) == entries.maxlen:
        stream.evicted = first = entries[0][0]
        if key_at and (gone := key_at.pop(first, None)) is not None:
            del keys[gone]
    entries.append((offset, data))


class MemoryHistory:
    """:class:`~wsgate.backends.base.RecentHistory` as ring buffers in this process.

    Offsets count up by one per channel from that stream's ``base``, an epoch
    in wall-clock microseconds taken when the stream is created (strictly
    increasing on this node), so a channel's offsets tell nothing of other
    channels' traffic, and a re-created stream's offsets lie above its earlier
    life's (as long as that life averaged under one action per microsecond).
    A client whose ``since`` is below ``base`` is told ``recovered: false``.

    A stream is freed ``ttl_s`` after its last member left or its last
    append, whichever is later; a stream no member ever joined counts as
    memberless from its first append. At most ``max_channels`` streams are
    retained: past that the longest-idle memberless stream is freed first
    (``max_channels = 0`` means unbounded). :meth:`retained` counts them.

    ``limits`` gives a channel's ``(size, ttl_s)`` when its stream is created
    (its namespace's, :meth:`wsgate.core.namespaces.Namespaces.history_of`);
    without it every stream has ``size`` and ``ttl_s``.
    """

    def __init__(
        self,
        size: int = 100,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_channels: int = 10_000,
        wall: Callable[[], float] = time.time,
        limits: Callable[[str], tuple[int, float]] | None = None,
    ) -> None:
        self._size = size
        self._ttl = ttl_s
        self._limits = limits
        self._clock = clock
        self._max = max_channels
        self._wall = wall
        self._epoch = 0
        """The last stream base handed out; only ever grows."""
        self._streams: dict[ChannelAddress, _Stream] = {}
        self._active: set[ChannelAddress] = set()
        """Channels with members; a subset of ``_streams``' keys."""
        self._idle: OrderedDict[ChannelAddress, float] = OrderedDict()
        """Memberless streams by expiry, oldest first."""

    def retained(self) -> int:
        """How many channel streams this node holds right now."""
        return len(self._streams)

    def _touch(self, channel: ChannelAddress) -> None:
        """An append: a memberless stream's expiry restarts from now."""
        self.sweep()
        if channel not in self._active:
            self._idle[channel] = self._clock() + self._streams[channel].ttl
            self._idle.move_to_end(channel)
        while self._max and len(self._streams) > self._max and self._idle:
            oldest = next(iter(self._idle))
            if oldest == channel and len(self._idle) == 1:
                return
            del self._idle[oldest]
            self._streams.pop(oldest, None)

    def _stream(self, channel: ChannelAddress) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            self._epoch = max(self._epoch + 1, int(self._wall() * 1_000_000))
            size, ttl = (self._size, self._ttl) if self._limits is None else self._limits(channel)
            stream = self._streams[channel] = _Stream(self._epoch, size, ttl)
        return stream

    def next_offset(self, channel: ChannelAddress) -> int:
        stream = self._stream(channel)
        stream.top += 1
        self._touch(channel)
        return stream.top

    def append(
        self, channel: ChannelAddress, offset: int, data: bytes, key: str | None = None
    ) -> None:
        stream = self._stream(channel)
        if stream.size == 0:
            return
        _put(stream, offset, data, key)

    def top(self, channel: ChannelAddress) -> int:
        stream = self._streams.get(channel)
        return 0 if stream is None else stream.top

    def since(self, channel: ChannelAddress, offset: int) -> Replay:
        stream = self._streams.get(channel)
        if stream is None:
            return Replay(offset == 0, [])
        if offset < stream.evicted or offset > stream.top or 0 < offset < stream.base:
            # Evicted, not yet issued, or from an earlier incarnation.
            return Replay(False, [])
        return Replay(True, [data for off, data in stream.entries if off > offset])

    def seen(
        self, channel: ChannelAddress, offset: int, prev: int, data: bytes, key: str | None = None
    ) -> bool:
        stream = self._stream(channel)
        contiguous = stream.top == prev
        if not contiguous:
            # A gap: nothing at or below prev can be served from here any more.
            stream.entries.clear()
            stream.keys, stream.key_at = {}, {}
            stream.evicted = prev
        stream.top = offset
        if stream.size:
            _put(stream, offset, data, key)
        self._touch(channel)
        return contiguous

    def load(self, channel: ChannelAddress, base: int, entries: list[tuple[int, bytes]]) -> None:
        stream = self._stream(channel)
        last = entries[-1][0] if entries else base
        live = [(o, d) for o, d in stream.entries if o > last]
        if live and stream.evicted > last:
            return  # live traffic already restarted the window past a gap: keep it
        merged = entries + live
        stream.keys, stream.key_at = {}, {}  # a stream's window: not a conflated one's
        keep = merged[-stream.size :] if stream.size else []
        stream.entries.clear()
        stream.entries.extend(keep)
        dropped = merged[: len(merged) - len(keep)]
        stream.evicted = dropped[-1][0] if dropped else base
        stream.base = base
        stream.top = live[-1][0] if live else last

    def retain(self, channel: ChannelAddress, active: bool) -> None:
        self.sweep()
        if active:
            self._idle.pop(channel, None)
            self._active.add(channel)
            self._stream(channel)
            return
        self._active.discard(channel)
        stream = self._streams.get(channel)
        if stream is not None:
            if stream.ttl <= 0 or not stream.entries:
                # Nothing to recover: drop at once so idle views cost nothing.
                del self._streams[channel]
            else:
                self._idle[channel] = self._clock() + stream.ttl
                self._idle.move_to_end(channel)

    def sweep(self, budget: int = 16) -> None:
        """Drop up to ``budget`` expired idle streams (bounded work per call).

        Every append and membership change sweeps a little; the node also
        calls it periodically, so a quiet node frees its streams too."""
        now = self._clock()
        idle = self._idle
        for _ in range(budget):
            if not idle:
                return
            channel, expires = next(iter(idle.items()))
            if expires > now:
                return
            del idle[channel]
            if channel not in self._active:
                self._streams.pop(channel, None)

    def __len__(self) -> int:
        return len(self._streams)


class MemoryRateLimits:
    """:class:`~wsgate.backends.base.RateLimitStore` in a dict, for one node.

    Keys whose arrival time has passed are swept when the dict has doubled
    since the last sweep, so memory follows the keys in use (amortized O(1)).
    """

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._sweep_at = 1024

    def acquire(self, key: str, interval: float, tolerance: float, now: float) -> float:
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        wait = tat - now - tolerance
        if wait > 0:
            return wait
        self._tat[key] = tat + interval
        if len(self._tat) >= self._sweep_at:
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        self._sweep_at = max(1024, 2 * len(self._tat))

    def __len__(self) -> int:
        return len(self._tat)
