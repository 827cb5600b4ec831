"""Pool → Hub → Channel: who is where, on this node.

- The :class:`Pool` holds every local connection, indexed by id and by user,
  and the hubs that have at least one member.
- A :class:`Hub` (``system``, ``public`` or an organization) holds the
  connections that joined it on connect and its view channels.
- A :class:`Channel` (``<hub>:<view>``) holds the connections that joined it.

Hubs and channels exist from their first member to their last: :meth:`Pool.join`
creates them, :meth:`Pool.leave` and :meth:`Pool.remove` delete them when they
empty, so memory returns to baseline however many views come and go.

Pure bookkeeping: no I/O, no policy. :mod:`wsgate.core.gateway` decides what is
allowed and what is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wsgate.core.delivery import Delivery
from wsgate.transport.base import Sends
from wsgate.typing import ChannelAddress, ConnectionId, HubId, UserId

if TYPE_CHECKING:
    from wsgate.core.clock import TimerHandle
    from wsgate.core.connection import Connection
    from wsgate.core.namespaces import ChannelOptions, Namespaces
    from wsgate.protocol.builtins import Member

__all__ = ["Channel", "Hub", "Latest", "PendingPresence", "Pool", "Window"]


_SEEN = -1
"""``PendingPresence.queued`` value of an entry some snapshot saw: it never cancels."""


class PendingPresence:
    """The diffs of one channel waiting for its batch window to end.

    Each connection is in at most one of ``joined`` and ``left`` (its latest
    change), and then in ``queued``.
    """

    __slots__ = ("counted", "joined", "left", "queued", "snapshots", "timer")

    def __init__(self) -> None:
        self.joined: dict[ConnectionId, Member] = {}
        self.left: dict[ConnectionId, Member] = {}
        self.queued: dict[ConnectionId, int] = {}
        """Per entry: ``snapshots`` when it was queued, or ``_SEEN`` once a
        snapshot was taken after that (it may no longer cancel)."""
        self.snapshots = 0
        """Member lists handed out (``JOINED``) since the window opened."""
        self.timer: TimerHandle | None = None
        self.counted = False
        """A change was counted but not recorded (past the threshold): the window
        must send the count at flush even if no entry is left."""

    def change(self, cid: ConnectionId, member: Member, *, joined: bool, record: bool) -> None:
        """``cid`` joined (or left); ``record=False`` past the threshold (count only).

        The call must be a real change: a join of a member not present, a
        leave of one present (the gateway and the cluster replica ensure it).
        """
        into, undo = (self.joined, self.left) if joined else (self.left, self.joined)
        if undo.pop(cid, None) is not None:
            if self.queued[cid] == self.snapshots:  # nobody saw the change it undoes
                del self.queued[cid]
                return
            self.queued[cid] = _SEEN
            into[cid] = member
        elif record:
            into[cid] = member
            self.queued.setdefault(cid, self.snapshots)
        else:
            self.counted = True

    def seen(self) -> None:
        """A member list was handed out: every entry queued so far was seen."""
        self.snapshots += 1


class Latest:
    """The latest action of one key in the current window."""

    __slots__ = ("data", "delivery", "offset")

    def __init__(self, delivery: Delivery, data: bytes | None, offset: int) -> None:
        self.delivery = delivery
        self.data = data
        """The frame when a cluster already gave it its offset; else encoded at flush."""
        self.offset = offset
        """That offset (0 until the flush assigns one)."""


class Window:
    """One conflated channel's state (``Channel.conflation``); see :mod:`wsgate.core.conflation`."""

    __slots__ = ("behind", "frames", "fresh", "pending", "timer")

    def __init__(self) -> None:
        self.pending: dict[str, Latest] = {}
        """Key → its latest action this window; cleared at every flush."""
        self.frames: dict[str, tuple[int, bytes, ConnectionId | None]] = {}
        """Key → its last flushed frame's offset, the frame, and the connection it skips
        (a relay's sender)."""
        self.behind: dict[ConnectionId, set[str]] = {}
        """Slow members → the keys whose newest frame they have not got."""
        self.fresh = 0
        """Keys in ``pending`` not yet in ``frames``: with ``frames`` they count the keys held."""
        self.timer: TimerHandle | None = None


def _nothing() -> None:
    """:attr:`Pool.settle` with no transport batching."""


class Channel:
    """A view channel: its local members, and (in a cluster) the other nodes' ones."""

    __slots__ = (
        "address", "conflation", "hub", "members", "options", "presence", "remote", "sends"
    )

    def __init__(self, address: ChannelAddress, hub: Hub, options: ChannelOptions) -> None:
        self.address = address
        self.hub = hub
        self.options = options
        """Its namespace's options, resolved once when the channel was created."""
        self.members: dict[ConnectionId, Connection] = {}
        """Connections on this node, in join order."""
        self.sends: Sends = {}
        """Each member's ``sink.send``, kept beside ``members`` for the fan-out's
        inner loop: one dict walk and one call per delivery, no attribute lookups."""
        self.presence: PendingPresence | None = None
        """Diffs waiting for the batch window (see :mod:`wsgate.core.presence`)."""
        self.remote: dict[ConnectionId, Member] | None = None
        """Members on other nodes, as presence shows them (a cluster keeps it)."""
        self.conflation: Window | None = None
        """A conflated channel's window (see :mod:`wsgate.core.conflation`)."""

    @property
    def count(self) -> int:
        """Members on every node."""
        return len(self.members) + (len(self.remote) if self.remote else 0)

    def everyone(self) -> list[Member]:
        """Every member as presence shows it: local ones first."""
        members = [conn.member for conn in self.members.values()]
        if self.remote:
            members.extend(self.remote.values())
        return members


class Hub:
    """A hub: its connected members and its live view channels."""

    __slots__ = ("channels", "id", "members")

    def __init__(self, hub_id: HubId) -> None:
        self.id = hub_id
        self.members: dict[ConnectionId, Connection] = {}
        self.channels: dict[ChannelAddress, Channel] = {}


class Pool:
    """Every local connection, hub and channel."""

    __slots__ = ("connections", "hubs", "ips", "namespaces", "settle", "users")

    def __init__(self, namespaces: Namespaces) -> None:
        self.settle: Callable[[], None] = _nothing
        """Called before a channel's or a hub's members change (a join or a leave, a
        connection added or removed). The transport's batch (:mod:`wsgate.transport.batch`)
        settles there, so that an action sent before the change reaches the members of
        before, and none of after."""
        self.namespaces = namespaces
        """Gives each channel its options when :meth:`join` creates it."""
        self.connections: dict[ConnectionId, Connection] = {}
        self.ips: dict[str, int] = {}
        """Connections per client address."""
        self.users: dict[UserId, dict[ConnectionId, Connection]] = {}
        self.hubs: dict[HubId, Hub] = {}

    # Connections -------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        """Register ``conn`` and put it in each of its hubs."""
        self.connections[conn.id] = conn
        self.ips[conn.peer] = self.ips.get(conn.peer, 0) + 1
        if not conn.principal.anonymous:
            self.users.setdefault(conn.user_id, {})[conn.id] = conn
        if conn.hubs:
            self.settle()
        for hub_id in conn.hubs:
            hub = self.hubs.get(hub_id)
            if hub is None:
                hub = self.hubs[hub_id] = Hub(hub_id)
            hub.members[conn.id] = conn

    def remove(self, conn: Connection) -> list[Channel]:
        """Take ``conn`` out of everything; return the channels it was in.

        The caller sends the ``left`` presence diffs; emptied channels and hubs
        are already gone from the pool (but the returned objects are intact).
        """
        left = [ch for addr in list(conn.channels or ()) if (ch := self.leave(conn, addr))]
        if self.connections.pop(conn.id, None) is not None:
            count = self.ips.get(conn.peer, 1) - 1
            if count > 0:
                self.ips[conn.peer] = count
            else:
                self.ips.pop(conn.peer, None)
        tabs = self.users.get(conn.user_id)
        if tabs is not None:
            tabs.pop(conn.id, None)
            if not tabs:
                del self.users[conn.user_id]
        if conn.hubs:
            self.settle()
        for hub_id in conn.hubs:
            hub = self.hubs.get(hub_id)
            if hub is not None:
                hub.members.pop(conn.id, None)
                if not hub.members and not hub.channels:
                    del self.hubs[hub_id]
        return left

    # Channels ----------------------------------------------------------------

    def channel(self, address: ChannelAddress) -> Channel | None:
        hub_id, _, _ = address.partition(":")
        hub = self.hubs.get(HubId(hub_id))
        return None if hub is None else hub.channels.get(address)

    def join(
        self, conn: Connection, hub_id: HubId, address: ChannelAddress
    ) -> tuple[Channel, bool]:
        """Add ``conn`` to the view ``address`` of ``hub_id``.

        Returns the channel and whether the connection was newly added (a
        second JOIN of the same channel is idempotent).
        """
        hub = self.hubs.get(hub_id)
        if hub is None:
            hub = self.hubs[hub_id] = Hub(hub_id)
        channel = hub.channels.get(address)
        if channel is None:
            options = self.namespaces.resolve(address)
            channel = hub.channels[address] = Channel(address, hub, options)
        if conn.id in channel.members:
            return channel, False
        self.settle()
        channel.members[conn.id] = conn
        channel.sends[conn.id] = conn.sink.send
        if conn.channels is None:
            conn.channels = set()
        conn.channels.add(address)
        return channel, True

    def leave(self, conn: Connection, address: ChannelAddress) -> Channel | None:
        """Remove ``conn`` from ``address``; return the channel if it was a member."""
        if conn.channels is None or address not in conn.channels:
            return None
        conn.channels.discard(address)
        if not conn.channels:
            conn.channels = None
        if conn.views:
            for hub_id, view in list(conn.views.items()):
                if view == address:
                    del conn.views[hub_id]
            if not conn.views:
                conn.views = None
        channel = self.channel(address)
        if channel is None:
            return None
        self.settle()
        channel.members.pop(conn.id, None)
        channel.sends.pop(conn.id, None)
        if not channel.members:
            hub = channel.hub
            hub.channels.pop(address, None)
            if not hub.members and not hub.channels:
                self.hubs.pop(hub.id, None)
        return channel

    def channel_count(self) -> int:
        return sum(len(hub.channels) for hub in self.hubs.values())
