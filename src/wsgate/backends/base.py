"""Backend interfaces, each with its guarantees.

Two families:

- **node-local, synchronous** — :class:`RecentHistory` and :class:`RateLimitStore`
  run on the fan-out and dispatch paths and never await. The core uses them
  directly (``memory.py`` implements them).
- **cluster, asynchronous** — :class:`Broker`, :class:`HistoryStore`,
  :class:`PresenceStore`, :class:`SharedLimits` and :class:`ServiceRegistry`
  connect the nodes of one gateway through Redis or NATS (``redis.py``,
  ``nats.py``; ``memory.py`` for one process). The cluster layer
  (:mod:`wsgate.cluster`) drives them; the core never awaits them.

The core never imports an implementation; :mod:`wsgate.node` builds them from
the ``[broker] url``. Every cluster implementation runs the shared conformance
suite in ``tests/backends/``, each test under its own key or subject prefix.
A backend that cannot give a guarantee says so in its docstring.

Failures: the synchronous node-local methods never raise. A cluster call
that fails raises :class:`~wsgate.exceptions.BackendUnavailable` (the server
cannot be reached or answered late: the call may succeed later) or
:class:`~wsgate.exceptions.BackendError` (it answered with an error), never
its driver's error, which is chained as ``__cause__``
(:mod:`wsgate.backends.errors` is that boundary). Per method:

- :meth:`HistoryStore.since`, :meth:`HistoryStore.window`, every
  :class:`PresenceStore`, :class:`SharedLimits` and :class:`ServiceRegistry`
  method: ``BackendUnavailable`` or ``BackendError`` (the memory hub never
  raises); Redis after one immediate retry and its 5 s socket timeout, NATS
  after its 2 s request timeout;
- :meth:`Broker.flush`: Redis waits for the reconnection and never raises
  (bound it with a timeout); NATS raises ``BackendUnavailable`` while
  disconnected or after its timeout; memory never raises;
- :meth:`Broker.start`, :meth:`Broker.close` and :meth:`Backend.close` never
  raise; :meth:`Broker.publish`/``publish_stream``/``subscribe``/
  ``unsubscribe`` return at once and do not report delivery: during an
  outage a message may be dropped (each implementation says how it counts
  that); NATS ``publish_stream`` raises :exc:`ValueError` for a subject other
  than ``chan.<stream>`` (a programming error);
- :func:`wsgate.backends.open_backend`: :class:`~wsgate.exceptions.ConfigError`
  (key ``broker.url``) for an unknown scheme, else ``BackendUnavailable`` or
  ``BackendError``.

Callers that must fail open catch :class:`~wsgate.exceptions.BackendError`
(:mod:`wsgate.cluster`: logged with the traceback, counted).

Names: a *subject* is a logical routing key (``node.<id>``, ``chan.<address>``,
``hub.<id>``, ``user.<id>``); a *stream* is the history of one channel
(``<address>``). Backends map both to their own naming (a NATS token cannot
hold ``.``; a Redis key gets the configured prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from wsgate.typing import ChannelAddress

__all__ = [
    "INBOX_STREAM_PREFIX",
    "Backend",
    "Broker",
    "Delivery",
    "HistoryStore",
    "PresenceStore",
    "RateLimitStore",
    "RecentHistory",
    "Registration",
    "Replay",
    "RevocationStore",
    "ServiceRegistry",
    "SharedLimits",
    "StreamReplay",
    "StreamWindow",
    "is_inbox",
]

INBOX_STREAM_PREFIX = "@inbox:"
"""A user's inbox stream is named so (:func:`wsgate.core.inbox.stream_of`); a channel's
never is (a hub id holds no ``@``). Cluster backends store such streams apart from
channels' history, bounded by ``[inbox]`` (:class:`HistoryStore`)."""


def is_inbox(stream: str) -> bool:
    """Whether ``stream`` is a user's inbox (bounded by ``[inbox]``), not a channel's history."""
    return stream.startswith(INBOX_STREAM_PREFIX)


class Replay(NamedTuple):
    """What :meth:`HistoryStore.since` found."""

    recovered: bool
    """``True`` when every action after the asked offset is in ``entries``."""
    entries: list[bytes]
    """Encoded actions after the asked offset, oldest first (empty when not recovered)."""


class RecentHistory(Protocol):
    """A node's bounded window of encoded actions per channel, with offsets.

    Guarantees:

    - offsets are positive integers, strictly increasing per channel and
      never reused while the node runs (a channel re-created later continues
      above every offset it ever had);
    - a channel keeps at most ``size`` entries; older ones are evicted;
      ``size`` and ``ttl_s`` may be set per channel (its namespace's);
    - a channel's stream outlives its last member by ``ttl_s`` seconds, so a
      client that reconnects within that window recovers what it missed;
    - calls are synchronous and O(1) amortized (``since`` is O(entries
      returned)), so the fan-out path never awaits.
    """

    def next_offset(self, channel: ChannelAddress) -> int:
        """Reserve and return the offset of the next action in ``channel``."""
        ...

    def append(
        self, channel: ChannelAddress, offset: int, data: bytes, key: str | None = None
    ) -> None:
        """Store ``data`` (which carries ``offset`` in its ``meta``).

        With a ``key`` (a conflated channel's) the entry replaces the channel's
        earlier entry of the same key: the window keeps the latest per key, and
        a replaced entry is not a loss (``since`` still recovers across it).
        """
        ...

    def top(self, channel: ChannelAddress) -> int:
        """The last offset assigned in ``channel`` (the stream's position)."""
        ...

    def since(self, channel: ChannelAddress, offset: int) -> Replay:
        """Entries after ``offset``, or ``recovered=False`` when some were lost."""
        ...

    def seen(
        self, channel: ChannelAddress, offset: int, prev: int, data: bytes, key: str | None = None
    ) -> bool:
        """Record an action whose offset a cluster's stream assigned.

        Returns ``False`` (and restarts the window at ``prev``) when ``prev`` is
        not the last offset recorded: messages were lost in between, and
        :meth:`since` never claims a recovery across the gap. A ``key`` (a
        conflated channel's) replaces the earlier entry of that key, as in
        :meth:`append`: the node's window keeps the latest per key.
        """
        ...

    def load(self, channel: ChannelAddress, base: int, entries: list[tuple[int, bytes]]) -> None:
        """Merge a stream's window (every offset above ``base`` is in ``entries``)
        with what was recorded live meanwhile."""
        ...

    def retain(self, channel: ChannelAddress, active: bool) -> None:
        """Mark the channel live (``True``) or idle since now (``False``).

        Idle streams are dropped ``ttl_s`` after they went idle.
        """
        ...

    def __len__(self) -> int:
        """Number of streams held (live and idle)."""
        ...


class RateLimitStore(Protocol):
    """GCRA state (a theoretical arrival time per key) for rate limits.

    Guarantees:

    - :meth:`acquire` is atomic per key: two calls never both take the last
      unit of a bucket;
    - a key whose state is in the past is equivalent to a fresh key, and the
      store may forget it (memory stays bounded by the keys in use);
    - synchronous and O(1) amortized: it runs on every inbound action.

    The memory store limits within one node; a cluster-wide store keeps the
    same contract across nodes.
    """

    def acquire(self, key: str, interval: float, tolerance: float, now: float) -> float:
        """Take one unit; return 0.0 if allowed, else the seconds until one is free.

        ``interval`` is the emission interval (period / rate); ``tolerance`` is
        ``interval * (burst - 1)``.
        """
        ...

    def __len__(self) -> int:
        """Keys currently held."""
        ...



# Cluster ---------------------------------------------------------------------


class Delivery(NamedTuple):
    """One message a :class:`Broker` hands to its node."""

    subject: str
    offset: int
    """The stream offset for messages published with :meth:`Broker.publish_stream`; else 0."""
    prev: int
    """The offset of the message before it in the same stream (``offset - 1`` where
    offsets are contiguous; 0 for the first, or when there is no stream). A node
    that last saw a different offset knows it missed messages (a gap) and
    recovers them with :meth:`HistoryStore.since`."""
    data: bytes


class Broker(Protocol):
    """Moves opaque messages between nodes, by subject.

    Guarantees (every implementation):

    - **at most once**: a message reaches the nodes subscribed to its subject
      when the broker server routes it, or nobody; nothing is stored or
      redelivered (history is :meth:`publish_stream`'s job);
    - **FIFO per publisher and subject**: one node's messages on one subject
      arrive in the order it published them;
    - **non-blocking**: :meth:`publish`, :meth:`publish_stream`,
      :meth:`subscribe` and :meth:`unsubscribe` queue work and return at
      once; one writer task sends it. :meth:`flush` waits until everything
      queued before it was accepted by the server (subscriptions active);
    - **reconnects by itself** after the server goes away, re-subscribing
      every subject it had; messages published while it was gone are lost
      (and recovered from history by clients).
    """

    async def start(self, deliver: Callable[[Delivery], None]) -> None:
        """Connect; from now on every message for a subscribed subject goes to ``deliver``."""
        ...

    async def close(self) -> None: ...

    def publish(self, subject: str, data: bytes) -> None:
        """Send ``data`` to the nodes subscribed to ``subject`` (offset 0)."""
        ...

    def publish_stream(self, subject: str, stream: str, data: bytes) -> None:
        """Append ``data`` to ``stream`` at its next offset, then publish it with that offset.

        Offsets of one stream are positive, contiguous (``prev = offset - 1``)
        and never reused (a stream re-created after it was freed starts at a
        later epoch, a time in microseconds); the append and
        the publish happen in that order for every publisher, so subscribers
        see one stream's messages in offset order, each with its ``prev``.
        """
        ...

    def subscribe(self, subject: str) -> None: ...

    def unsubscribe(self, subject: str) -> None: ...

    async def flush(self) -> None: ...

    @property
    def received(self) -> dict[str, int]:
        """Messages delivered to this node per subject since start (for tests, metrics)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the broker holds a live connection to its server now (``False``
        while it reconnects; always ``True`` in process)."""
        ...


class StreamReplay(NamedTuple):
    """What :meth:`HistoryStore.since` found in a stream."""

    recovered: bool
    """Every message after the asked offset is in ``entries``."""
    entries: list[tuple[int, bytes]]
    """``(offset, data)`` after the asked offset, oldest first."""
    top: int
    """The stream's last offset (0 for an empty or unknown stream)."""


class HistoryStore(Protocol):
    """Reads the streams :meth:`Broker.publish_stream` writes.

    Each stream keeps at most ``size`` messages and is freed from the
    backend's storage ``ttl_s`` after its last append (NATS: each message
    ``ttl_s`` after its own append); at most ``max_channels`` streams are
    retained, the one with the oldest last append freed first (NATS: at most
    ``max_channels × size`` messages, the oldest first). All three are set
    when the backend is built, twice: channels' streams take ``[history]``'s
    ``size``, ``ttl_s`` and ``max_channels``; users' inboxes (:func:`is_inbox`)
    take ``[inbox]``'s ``max_messages``, ``ttl_s`` and ``max_users``, counted
    apart, so inboxes never evict a channel's history nor the reverse. Offsets
    are per stream: ``created + 1``, ``created + 2``, … where ``created`` (the
    stream's epoch) is a time in microseconds above every offset the stream had
    before it was freed.
    """

    async def since(self, stream: str, offset: int) -> StreamReplay:
        """Messages after ``offset``; ``recovered`` is false when some were evicted or expired.

        ``offset == 0`` stands for "before the stream existed" (the offset a
        client is given for a channel without history): it is recovered when
        the stream has evicted nothing since it was created. An offset of an
        earlier incarnation of an expired stream is never recovered.
        """
        ...

    async def window(self, stream: str) -> StreamWindow:
        """Everything the stream still holds, with the boundary below which it is incomplete."""
        ...


class StreamWindow(NamedTuple):
    """A stream's retained messages: every offset in ``(base, top]`` is in ``entries``.

    ``base`` is 0 while the stream has evicted nothing since it was created (so
    a client holding offset 0 recovers everything), else the last evicted offset.
    """

    base: int
    entries: list[tuple[int, bytes]]
    top: int


class PresenceStore(Protocol):
    """Who is in which channel, cluster-wide, with node liveness.

    Guarantees: :meth:`add`/:meth:`remove` are atomic per member; members of a
    node whose heartbeat (:meth:`beat`) is older than its TTL are reported by
    :meth:`dead_nodes` and removed by :meth:`purge`.
    """

    async def add(self, channel: str, conn_id: str, node: str, member: bytes) -> None: ...

    async def remove(self, channel: str, conn_id: str) -> None: ...

    async def members(self, channel: str) -> dict[str, tuple[str, bytes]]:
        """``conn_id → (node, member)`` of every member."""
        ...

    async def beat(self, node: str, ttl_s: float) -> None:
        """``node`` is alive for ``ttl_s`` more seconds."""
        ...

    async def dead_nodes(self, nodes: set[str]) -> set[str]:
        """Those of ``nodes`` whose heartbeat expired."""
        ...

    async def purge(self, channel: str, nodes: set[str]) -> list[str]:
        """Remove the members of ``nodes`` from ``channel``; return their connection ids."""
        ...


class SharedLimits(Protocol):
    """Rate limits and counters that hold across nodes.

    :meth:`acquire` has :meth:`RateLimitStore.acquire`'s contract, atomic
    across nodes (Redis: one Lua script; NATS: a KV compare-and-set loop).
    """

    async def acquire(self, key: str, interval: float, tolerance: float) -> float:
        """0.0 if allowed, else seconds until one unit is free; the server's clock decides."""
        ...

    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        """Add (``delta=1``) or remove (``-1``) ``member`` of ``node``; return the size of ``key``.

        Members of dead nodes are dropped by :meth:`forget_node`.
        """
        ...

    async def forget_node(self, node: str) -> None: ...


class Registration(NamedTuple):
    name: str
    url: str
    actions: list[str]
    expires_at: float
    """Unix time."""


class ServiceRegistry(Protocol):
    """Self-registrations shared by every node (each node still expires them itself)."""

    async def put(self, registration: Registration) -> None: ...

    async def delete(self, name: str, url: str) -> None: ...

    async def all(self) -> list[Registration]:
        """Every registration not yet expired."""
        ...


class RevocationStore(Protocol):
    """Revocations shared by every node, each held until what it covers has expired.

    A key (``sid:<session id>``, ``user:<user id>``) maps to a "not before"
    Unix time. :meth:`put` of a key held already keeps the later ``not_before``
    and the later expiry. :meth:`all` never returns an entry past its
    ``ttl_s``; an expired entry is freed by the store (Redis: on read; NATS:
    the bucket's age limit; memory: on read and write). Implementations:
    ``backends/*_revocations.py``.
    """

    async def put(self, key: str, not_before: float, ttl_s: float) -> None: ...

    async def all(self) -> dict[str, float]:
        """Every revocation not yet expired: key -> not before (Unix time)."""
        ...

    async def close(self) -> None:
        """Free what the store holds of its own (not the backend's connection)."""
        ...


class Backend(Protocol):
    """One cluster backend: the five stores over one connection (or pool)."""

    @property
    def broker(self) -> Broker: ...

    @property
    def history(self) -> HistoryStore: ...

    @property
    def presence(self) -> PresenceStore: ...

    @property
    def limits(self) -> SharedLimits: ...

    @property
    def registry(self) -> ServiceRegistry: ...

    async def close(self) -> None: ...
