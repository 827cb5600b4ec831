"""The cluster backends in one process: several nodes of one test share a hub.

Nodes whose ``[broker] url`` and prefix are equal (``memory://``,
``memory://cluster-a``) share one :class:`_Hub`: a broker that delivers with
``loop.call_soon`` (asynchronously, in publish order, like a real server),
bounded streams (each freed ``ttl_s`` after its last append, found by the
next stream call; at most ``max_channels``, the longest-quiet freed first;
offsets above every offset the hub issued; users' inboxes apart, with the
``[inbox]`` bounds), presence with heartbeats, GCRA limits and registrations.
It is the reference the conformance suite holds Redis and NATS to; it gives
every guarantee of :mod:`wsgate.backends.base` within one process.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from wsgate.backends.base import Delivery, Registration, StreamReplay, StreamWindow, is_inbox

__all__ = ["MemoryCluster", "open_memory"]


def stream_start() -> int:
    """First offset base of a new stream: microseconds now, so offsets never repeat."""
    return int(time.time() * 1_000_000)


@dataclass
class _Stream:
    top: int
    evicted: int
    """Every offset up to this one is gone; 0 while nothing was evicted."""
    entries: deque[tuple[int, bytes]]
    expires_at: float
    created: int
    """The base the stream started from: offsets of an earlier incarnation are below it."""


@dataclass(frozen=True)
class _Bounds:
    size: int
    ttl_s: float
    most: int
    """Streams of the kind retained at most (0: unbounded)."""


@dataclass
class _Hub:
    brokers: set[MemoryBroker] = field(default_factory=set)
    streams: OrderedDict[str, _Stream] = field(default_factory=OrderedDict)
    """Channels' streams by last append, oldest first: bounded by ``max_channels``,
    freed ``ttl_s`` after their last append (:meth:`sweep`)."""
    inboxes: OrderedDict[str, _Stream] = field(default_factory=OrderedDict)
    """Users' inbox streams, the same way, bounded by ``[inbox]`` apart from channels."""
    floor: int = 0
    """The highest offset ever issued here: a new stream starts above it."""
    presence: dict[str, dict[str, tuple[str, bytes]]] = field(default_factory=dict)
    beats: dict[str, float] = field(default_factory=dict)
    tats: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, str]] = field(default_factory=dict)
    registry: dict[tuple[str, str], Registration] = field(default_factory=dict)


    def table(self, stream: str) -> OrderedDict[str, _Stream]:
        """Where ``stream`` is kept: with the inboxes or with the channels."""
        return self.inboxes if is_inbox(stream) else self.streams

    def sweep(self, now: float, budget: int = 64) -> None:
        """Free up to ``budget`` streams of each kind whose ttl has passed (oldest first)."""
        for streams in (self.streams, self.inboxes):
            for _ in range(budget):
                if not streams:
                    break
                name, st = next(iter(streams.items()))
                if st.expires_at > now:
                    break
                del streams[name]


_HUBS: dict[tuple[str, str], _Hub] = {}


class MemoryBroker:
    """:class:`~wsgate.backends.base.Broker` within one process."""

    def __init__(self, hub: _Hub, channels: _Bounds, inboxes: _Bounds) -> None:
        self._hub = hub
        self._channels = channels
        self._inboxes = inboxes
        self._subjects: set[str] = set()
        self._deliver: Callable[[Delivery], None] | None = None
        self._received: dict[str, int] = {}

    async def start(self, deliver: Callable[[Delivery], None]) -> None:
        self._deliver = deliver
        self._hub.brokers.add(self)

    async def close(self) -> None:
        self._hub.brokers.discard(self)
        self._deliver = None

    def _route(self, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        for broker in list(self._hub.brokers):
            if delivery.subject in broker._subjects:
                loop.call_soon(broker._receive, delivery)

    def _receive(self, delivery: Delivery) -> None:
        if self._deliver is None or delivery.subject not in self._subjects:
            return
        self._received[delivery.subject] = self._received.get(delivery.subject, 0) + 1
        self._deliver(delivery)

    def publish(self, subject: str, data: bytes) -> None:
        self._route(Delivery(subject, 0, 0, data))

    def publish_stream(self, subject: str, stream: str, data: bytes) -> None:
        hub = self._hub
        now = time.monotonic()
        hub.sweep(now)
        table = hub.table(stream)
        bounds = self._inboxes if table is hub.inboxes else self._channels
        st = table.get(stream)
        if st is None or st.expires_at <= now:
            base = max(stream_start(), hub.floor)
            entries: deque[tuple[int, bytes]] = deque(maxlen=max(bounds.size, 1))
            st = table[stream] = _Stream(base, 0, entries, 0.0, base)
        prev = st.top
        st.top += 1
        hub.floor = max(hub.floor, st.top)
        table.move_to_end(stream)
        while bounds.most and len(table) > bounds.most:
            table.popitem(last=False)  # the longest-quiet stream first
        if bounds.size > 0:
            if len(st.entries) == st.entries.maxlen:
                st.evicted = st.entries[0][0]
            st.entries.append((st.top, data))
        else:
            st.evicted = st.top
        st.expires_at = now + bounds.ttl_s
        self._route(Delivery(subject, st.top, prev, data))

    def subscribe(self, subject: str) -> None:
        self._subjects.add(subject)

    def unsubscribe(self, subject: str) -> None:
        self._subjects.discard(subject)

    async def flush(self) -> None:
        await asyncio.sleep(0)

    @property
    def received(self) -> dict[str, int]:
        return self._received

    @property
    def connected(self) -> bool:
        return True


class MemoryStreams:
    """:class:`~wsgate.backends.base.HistoryStore` over the hub's streams."""

    def __init__(self, hub: _Hub) -> None:
        self._hub = hub

    async def since(self, stream: str, offset: int) -> StreamReplay:
        self._hub.sweep(time.monotonic())
        st = self._hub.table(stream).get(stream)
        if st is None or st.expires_at <= time.monotonic():
            return StreamReplay(offset == 0, [], 0)
        if offset < st.evicted or offset > st.top or 0 < offset < st.created:
            return StreamReplay(False, [], st.top)
        return StreamReplay(True, [(o, d) for o, d in st.entries if o > offset], st.top)

    async def window(self, stream: str) -> StreamWindow:
        self._hub.sweep(time.monotonic())
        st = self._hub.table(stream).get(stream)
        if st is None or st.expires_at <= time.monotonic():
            return StreamWindow(0, [], 0)
        return StreamWindow(st.evicted, list(st.entries), st.top)


class MemoryPresence:
    """:class:`~wsgate.backends.base.PresenceStore` over the hub's dicts."""

    def __init__(self, hub: _Hub) -> None:
        self._hub = hub

    async def add(self, channel: str, conn_id: str, node: str, member: bytes) -> None:
        self._hub.presence.setdefault(channel, {})[conn_id] = (node, member)

    async def remove(self, channel: str, conn_id: str) -> None:
        members = self._hub.presence.get(channel)
        if members is not None:
            members.pop(conn_id, None)
            if not members:
                del self._hub.presence[channel]

    async def members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        return dict(self._hub.presence.get(channel, {}))

    async def beat(self, node: str, ttl_s: float) -> None:
        self._hub.beats[node] = time.monotonic() + ttl_s

    async def dead_nodes(self, nodes: set[str]) -> set[str]:
        now = time.monotonic()
        return {n for n in nodes if self._hub.beats.get(n, 0.0) <= now}

    async def purge(self, channel: str, nodes: set[str]) -> list[str]:
        members = self._hub.presence.get(channel, {})
        gone = [cid for cid, (node, _) in members.items() if node in nodes]
        for cid in gone:
            del members[cid]
        if not members:
            self._hub.presence.pop(channel, None)
        return gone


class MemoryShared:
    """:class:`~wsgate.backends.base.SharedLimits` over the hub's dicts."""

    def __init__(self, hub: _Hub) -> None:
        self._hub = hub

    async def acquire(self, key: str, interval: float, tolerance: float) -> float:
        now = time.monotonic()
        tat = max(self._hub.tats.get(key, now), now)
        wait = tat - now - tolerance
        if wait > 0:
            return wait
        self._hub.tats[key] = tat + interval
        return 0.0

    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        members = self._hub.counts.setdefault(key, {})
        if delta > 0:
            members[member] = node
        else:
            members.pop(member, None)
        size = len(members)
        if not members:
            del self._hub.counts[key]
        return size

    async def forget_node(self, node: str) -> None:
        for key in list(self._hub.counts):
            members = self._hub.counts[key]
            for member in [m for m, n in members.items() if n == node]:
                del members[member]
            if not members:
                del self._hub.counts[key]


class MemoryRegistry:
    """:class:`~wsgate.backends.base.ServiceRegistry` over the hub's dict."""

    def __init__(self, hub: _Hub) -> None:
        self._hub = hub

    async def put(self, registration: Registration) -> None:
        self._hub.registry[(registration.name, registration.url)] = registration

    async def delete(self, name: str, url: str) -> None:
        self._hub.registry.pop((name, url), None)

    async def all(self) -> list[Registration]:
        now = time.time()
        return [r for r in self._hub.registry.values() if r.expires_at > now]


class MemoryCluster:
    """:class:`~wsgate.backends.base.Backend` for nodes of one process."""

    def __init__(
        self,
        hub: _Hub,
        size: int,
        ttl_s: float,
        max_channels: int = 10_000,
        *,
        inbox_size: int = 100,
        inbox_ttl_s: float = 300.0,
        inbox_max_users: int = 10_000,
    ) -> None:
        channels = _Bounds(size, ttl_s, max_channels)
        self.broker = MemoryBroker(hub, channels, _Bounds(inbox_size, inbox_ttl_s, inbox_max_users))
        self.history = MemoryStreams(hub)
        self.presence = MemoryPresence(hub)
        self.limits = MemoryShared(hub)
        self.registry = MemoryRegistry(hub)

    async def close(self) -> None:
        await self.broker.close()


async def open_memory(
    url: str,
    *,
    prefix: str,
    node: str,
    history_size: int,
    history_ttl_s: float,
    history_max_channels: int = 10_000,
    inbox_size: int = 100,
    inbox_ttl_s: float = 300.0,
    inbox_max_users: int = 10_000,
) -> MemoryCluster:
    """The in-process backend of the hub named by ``url`` and ``prefix``."""
    hub = _HUBS.setdefault((url, prefix), _Hub())
    return MemoryCluster(
        hub, history_size, history_ttl_s, history_max_channels,
        inbox_size=inbox_size, inbox_ttl_s=inbox_ttl_s, inbox_max_users=inbox_max_users,
    )
