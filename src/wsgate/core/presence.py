"""Presence diffs, batched per channel.

When members come and go, the other members get ``@@wsgate/PRESENCE
{channel, joined, left, count}``. Diffs of one channel are collected for
``batch_ms`` and sent as one action, encoded once for all its members. Past
its namespace's ``presence_max_members`` (:mod:`wsgate.core.namespaces`) a
channel's diffs carry only ``count`` and go out at most once per
``large_batch_ms``: 10,000 members joining one channel cost a few thousand
count updates, not 50 million diffs. A namespace with ``presence = false``
sends no diffs at all, and its ``JOINED`` carries only ``count``.

Diffs are idempotent: a client applies ``joined``/``left`` by
``connectionId``, so a member may see a join it already knows from its
``JOINED`` snapshot (or its own), or a leave of someone it never saw, without
harm.

Guarantee (below the threshold): when a window's diff has been sent, every
member's view (its ``JOINED`` snapshot plus the diffs it received afterwards)
equals the channel's membership; past it, every member's last ``count`` does.
A window keeps, per connection, its latest change; a change undone inside the
window (join then leave, leave then rejoin) is dropped only if no snapshot was
taken since it was queued — then every member already knows the state it
returns to. Once a snapshot saw the change, the entry stays and carries the
final state instead; a count-only snapshot (past the threshold) counts as one.
A window that crossed the threshold always sends its final count. Each change
costs O(1); a window holds at most one entry per connection that changed,
freed at flush. Past the threshold nothing new is
recorded (``count`` only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsgate.core.clock import Scheduler
from wsgate.core.pool import PendingPresence
from wsgate.protocol import builtins as bi
from wsgate.protocol.envelope import Outbound, encode
from wsgate.typing import ConnectionId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.pool import Channel

# PendingPresence lives in wsgate.core.pool (a Channel holds one), re-exported here:
# the pool needs no import of this module.

__all__ = ["PendingPresence", "PresenceBatcher"]


class PresenceBatcher:
    """Collects joins and leaves per channel and sends them in batches."""

    __slots__ = ("_batch", "_large_batch", "_scheduler")

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        batch_ms: int = 50,
        large_batch_ms: int = 1000,
    ) -> None:
        self._scheduler = scheduler
        self._batch = batch_ms / 1000
        self._large_batch = max(large_batch_ms, batch_ms) / 1000

    @staticmethod
    def is_large(channel: Channel) -> bool:
        """Past its namespace's ``presence_max_members``, presence shows only ``count``."""
        return channel.count > channel.options.presence_max_members

    def snapshot(self, channel: Channel) -> list[bi.Member] | None:
        """The member list for ``JOINED``, or ``None`` past the threshold.

        Either is a snapshot: a count-only ``JOINED`` counted every queued entry
        too, so none of them may cancel any more.
        """
        if channel.presence is not None:
            channel.presence.seen()
        if self.is_large(channel) or not channel.options.presence:
            return None
        return channel.everyone()

    def joined(self, channel: Channel, conn: Connection) -> None:
        """``conn`` was added to ``channel``."""
        if not channel.options.presence:
            return
        if self._unbatched(channel):
            self._send(channel, [conn.member], [], skip=conn)
            return
        record = not self.is_large(channel)
        self._pending(channel).change(conn.id, conn.member, joined=True, record=record)

    def left(self, channel: Channel, conn: Connection) -> None:
        """``conn`` was removed from ``channel`` (which may now be empty)."""
        if not channel.options.presence:
            return
        if self._unbatched(channel):
            self._send(channel, [], [conn.member], skip=conn)
            return
        record = not self.is_large(channel)
        self._pending(channel).change(conn.id, conn.member, joined=False, record=record)

    def remote(self, channel: Channel, joined: list[bi.Member], left: list[bi.Member]) -> None:
        """Members came or went on other nodes (the cluster updated ``channel.remote``).

        As for :meth:`joined` and :meth:`left`, each member must be a real
        change of ``channel.remote``.
        """
        if not channel.members or not channel.options.presence:
            return
        if self._unbatched(channel):
            self._send(channel, joined, left)
            return
        pending = self._pending(channel)
        record = not self.is_large(channel)
        for member in joined:
            pending.change(ConnectionId(member.connectionId), member, joined=True, record=record)
        for member in left:
            pending.change(ConnectionId(member.connectionId), member, joined=False, record=record)

    def _unbatched(self, channel: Channel) -> bool:
        return self._batch <= 0 and not self.is_large(channel)

    def _pending(self, channel: Channel) -> PendingPresence:
        pending = channel.presence
        if pending is None:
            pending = channel.presence = PendingPresence()
        if pending.timer is None:
            delay = self._large_batch if self.is_large(channel) else self._batch
            pending.timer = self._scheduler.call_later(delay, lambda: self.flush(channel))
        return pending

    def flush(self, channel: Channel) -> None:
        """Send what is pending for ``channel`` (its timer calls this)."""
        pending = channel.presence
        channel.presence = None
        if pending is None or not channel.members:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        if self.is_large(channel):
            self._send(channel, [], [])
        elif pending.joined or pending.left or pending.counted:
            # ``counted``: the window crossed the threshold and back; its count changed
            # even if no recorded entry is left (lists taken before a crossing go stale).
            self._send(channel, list(pending.joined.values()), list(pending.left.values()))

    def discard(self, channel: Channel) -> None:
        """The channel emptied: drop its pending diffs and timer."""
        pending = channel.presence
        channel.presence = None
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    @staticmethod
    def _send(
        channel: Channel,
        joined: list[bi.Member],
        left: list[bi.Member],
        skip: Connection | None = None,
    ) -> None:
        payload = bi.PresencePayload(channel.address, joined, left, channel.count)
        data = encode(Outbound(bi.PRESENCE, payload))
        for conn in channel.members.values():
            if conn is not skip:
                conn.sink.send(data)
