"""Backend interfaces the core works against, each with its guarantees.

The core never imports an implementation; :mod:`wsgate.node` builds one from
the ``[broker] url`` and injects it. Every implementation runs the shared
conformance suite in ``tests/backends/``.

Only what the current core uses is declared here; cluster-wide brokers,
presence and rate-limit stores join when a second node consumes them, each in
its own Protocol so a backend that cannot give a guarantee can say so.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from wsgate.typing import ChannelAddress

__all__ = ["HistoryStore", "RateLimitStore", "Replay"]


class Replay(NamedTuple):
    """What :meth:`HistoryStore.since` found."""

    recovered: bool
    """``True`` when every action after the asked offset is in ``entries``."""
    entries: list[bytes]
    """Encoded actions after the asked offset, oldest first (empty when not recovered)."""


class HistoryStore(Protocol):
    """A bounded stream of encoded actions per channel, with offsets.

    Guarantees:

    - offsets are positive integers, strictly increasing per channel and
      never reused while the node runs (a channel re-created later continues
      above every offset it ever had);
    - a channel keeps at most ``size`` entries; older ones are evicted;
    - a channel's stream outlives its last member by ``ttl_s`` seconds, so a
      client that reconnects within that window recovers what it missed;
    - calls are synchronous and O(1) amortized (``since`` is O(entries
      returned)), so the fan-out path never awaits.
    """

    def next_offset(self, channel: ChannelAddress) -> int:
        """Reserve and return the offset of the next action in ``channel``."""
        ...

    def append(self, channel: ChannelAddress, offset: int, data: bytes) -> None:
        """Store ``data`` (which carries ``offset`` in its ``meta``)."""
        ...

    def top(self, channel: ChannelAddress) -> int:
        """The last offset assigned in ``channel`` (the stream's position)."""
        ...

    def since(self, channel: ChannelAddress, offset: int) -> Replay:
        """Entries after ``offset``, or ``recovered=False`` when some were lost."""
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
