"""Fan-out: a :class:`~wsgate.core.delivery.Delivery` to the local members of its target.

An action for many connections is encoded once and the same ``bytes`` object
handed to every sink (the transport frames it once too). Targets (one
:class:`~wsgate.core.delivery.TargetKind` each):

- a connection (by id), a user (every tab), a view channel, a hub;
- ``exclude`` skips one connection (the sender of a relay, unless it asked
  for ``meta.echo``).

Dispatch on the kind is a table, built once per :class:`Fanout`: one for a
delivery that starts here (:meth:`Fanout.send`, which may go through the
cluster :class:`Bus`) and one for a delivery that another node started
(:meth:`Fanout.deliver_local`, this node's members only).

Actions delivered to a view channel get the next ``meta.offset`` of its
history and are stored there, so a client that rejoins with ``since``
recovers them. Hub-wide deliveries carry no offset (hubs are not streams).
A channel whose namespace conflates it (``conflate_ms``) hands its
deliveries to :class:`~wsgate.core.conflation.Conflation` instead, which
sends the latest per key when the window ends; a relay into a channel whose
namespace sets ``relay = false`` is refused ``FORBIDDEN``.
With an
``inbox`` store (:mod:`wsgate.core.inbox`), a user's deliveries get the next
``meta.offset`` of the user's inbox stream and are stored there, whether or
not the user is connected; in a cluster the bus's stream assigns it and every
node delivers on receipt (:meth:`Fanout.deliver_inbox`).
Nothing reaches a connection outside the target: members are looked up in
the target's own index, never filtered from a wider set.

The live action tap (:mod:`wsgate.api.tap`, and on a cluster
:mod:`wsgate.cluster.taps`) sees a channel's and a connection's deliveries
through :attr:`Fanout.taps`, which :class:`wsgate.core.taps.TapRegistry`
sets: one check of that plain attribute per delivered action (never per
member), so a node no one taps pays nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import msgspec

from wsgate.backends.base import RecentHistory
from wsgate.core.acks import Acks
from wsgate.core.clock import Scheduler
from wsgate.core.conflation import Conflation, key_of
from wsgate.core.delivery import Delivery, TargetKind
from wsgate.core.inbox import stream_of
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, From, Outbound, OutMeta, encode
from wsgate.transport.base import Sends
from wsgate.typing import ChannelAddress, ConnectionId, HubId, UserId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.pool import Pool

__all__ = ["Bus", "Fanout"]

Route = Callable[[Delivery], int]
"""Delivers one :class:`Delivery`; returns how many local connections got it."""

HubSend = Callable[[dict[ConnectionId, "Connection"], bytes, ConnectionId | None], int]
"""Hands one encoded action to a hub's connections but one; returns the deliveries.
:func:`_send_hub` by default; the transport's batching writer in a node
(:meth:`wsgate.transport.outbound.Flusher.publish_hub`)."""

ChannelSend = Callable[[Sends, bytes, ConnectionId | None], int]
"""Hands one encoded action to a channel's members (its ``sends``) but one; returns the
deliveries. :func:`_send_each` by default; the transport's batching writer in a node
(:meth:`wsgate.transport.outbound.Flusher.publish`)."""


class Bus(Protocol):
    """Delivery beyond this node (:mod:`wsgate.cluster`). Never blocks.

    The bus delivers on the other nodes (and, for view channels, on this one
    too) by calling :meth:`Fanout.deliver_local` or
    :meth:`Fanout.deliver_channel` of their fan-out.
    """

    def send(self, delivery: Delivery) -> None: ...


def _send_each(sends: Sends, data: bytes, exclude: ConnectionId | None) -> int:
    """The fan-out's inner loop over a channel's ``sends``; returns the deliveries."""
    skip = None if exclude is None else sends.get(exclude)
    for send in sends.values():
        if send is not skip:
            send(data)
    return len(sends) - (skip is not None)


def _send_all(members: Iterable[Connection], data: bytes, exclude: ConnectionId | None) -> int:
    sent = 0
    for conn in members:
        if conn.id != exclude:
            conn.sink.send(data)
            sent += 1
    return sent


def _send_hub(
    members: dict[ConnectionId, Connection], data: bytes, exclude: ConnectionId | None
) -> int:
    return _send_all(members.values(), data, exclude)


def _frame(d: Delivery, meta: OutMeta | None) -> bytes:
    return encode(Outbound(d.type, d.payload, meta, d.error))


class Fanout:
    """Local delivery for one node's ``pool``, recording channels in ``history``.

    Given at construction and fixed: the pool (the targets' member indexes),
    the recent history (view channels' offsets) and, in a cluster, the
    ``bus``. It needs nothing else of the gateway.

    :attr:`delivered` counts the local deliveries (one integer addition per
    fan-out at its three entry points, never per connection).
    """

    __slots__ = (
        "_acks", "_history", "_inbox", "_local", "_pool", "_send", "bus", "channel_send",
        "conflation", "delivered", "hub_send", "taps",
    )

    def __init__(
        self,
        pool: Pool,
        history: RecentHistory,
        scheduler: Scheduler,
        bus: Bus | None = None,
        inbox: RecentHistory | None = None,
        acks: Acks | None = None,
    ) -> None:
        self._pool = pool
        self._acks = acks
        """Acknowledged deliveries (``None``: a delivery's ``ack`` is ignored)."""
        self._history = history
        self._inbox = inbox
        """Users' inbox streams (``None``: ``[inbox]`` is off; a user's delivery has no offset)."""
        self.bus = bus
        """Delivery beyond this node; ``None`` on a single node."""
        self.delivered = 0
        """Actions handed to a local connection's sink by the fan-out (only grows)."""
        self.channel_send: ChannelSend = _send_each
        """How a channel's delivery reaches its members: one ``send`` each
        (:func:`_send_each`) unless the transport batches them (set by the node with
        :attr:`Pool.settle`, which the batch needs)."""
        self.hub_send: HubSend = _send_hub
        """How a hub's delivery reaches its connections: the same, for a hub."""
        self.conflation = Conflation(scheduler, history, self._count)
        """The windows of conflated channels (``conflate_ms``): their deliveries wait there."""
        self.taps: Callable[[Delivery, int], None] | None = None
        """Called with each channel or connection delivery given to local members, and
        its channel offset (0 for a connection's), while a tap is open; ``None`` (the
        default) while no one taps. Set only by :class:`wsgate.core.taps.TapRegistry`.
        Must not raise."""
        self._send: dict[TargetKind, Route] = {
            TargetKind.CONNECTION: self._to_connection,
            TargetKind.USER: self._spread if inbox is None else self._to_inbox,
            TargetKind.CHANNEL: self._to_channel,
            TargetKind.HUB: self._spread,
        }
        """A delivery that starts on this node, by kind."""
        self._local: dict[TargetKind, Route] = {
            TargetKind.CONNECTION: self._local_connection,
            TargetKind.USER: self._local_user,
            TargetKind.HUB: self._local_hub,
        }
        """A delivery another node started, by kind (channels: :meth:`deliver_channel`)."""

    def relay(self, conn: Connection, action: Action) -> None:
        """Relay ``action`` from ``conn`` to the other members of ``meta.channel``."""
        meta = action.meta
        rid = None if meta is None else meta.id
        if meta is None or meta.channel is None:
            conn.send_error(ErrorCode.BAD_REQUEST, f"{action.type} needs meta.channel", rid)
            return
        channel = ChannelAddress(meta.channel)
        if not conn.in_channel(channel):
            conn.send_error(ErrorCode.NOT_JOINED, f"not in {channel}", rid)
            return
        joined = self._pool.channel(channel)
        if joined is not None and not joined.options.relay:
            conn.send_error(ErrorCode.FORBIDDEN, f"no relaying into {channel}", rid)
            return
        origin = From(conn.principal.sub, conn.id)
        exclude = None if meta.echo else conn.id
        # The channel entry of the send table, called directly: the kind is known.
        self.delivered += self._to_channel(
            Delivery(
                TargetKind.CHANNEL, channel, action.type, action.payload, action.error,
                origin, exclude,
            )
        )

    def send(self, delivery: Delivery) -> int:
        """Deliver ``delivery`` from this node; return the local deliveries.

        A connection here gets it directly; one elsewhere through the bus. A
        user's or hub's delivery goes to the bus and to the local members. In
        a cluster a view channel's goes only through the bus, which assigns
        its offset; every node (this one too) delivers it on receipt
        (:meth:`deliver_channel`), so the count returned is 0.
        """
        n = self._send[delivery.kind](delivery)
        self.delivered += n
        return n

    def deliver_local(self, delivery: Delivery) -> int:
        """Another node's hub, user or connection delivery: give it to local members only.

        Never sent on to the bus. Raises :class:`KeyError` for a channel
        delivery, which carries an offset (:meth:`deliver_channel`).
        """
        n = self._local[delivery.kind](delivery)
        self.delivered += n
        return n

    def deliver_channel(self, delivery: Delivery, offset: int, prev: int) -> int:
        """A cluster's channel delivery reached this node: record it, give it to local members."""
        address = ChannelAddress(delivery.target)
        data = _frame(delivery, OutMeta(address, offset, from_=delivery.origin))
        channel = self._pool.channel(address)
        # A conflated channel's history keeps the latest per key, as on one node.
        key = None
        if channel is not None and channel.options.conflate_ms:
            key = key_of(delivery.payload, channel.options.conflate_key)
        self._history.seen(address, offset, prev, data, key)
        if self.taps is not None:
            self.taps(delivery, offset)
        if channel is None:
            return 0
        if key is not None and self.conflation.offer_frame(channel, delivery, data, offset, key):
            return 0  # delivered (and counted) when the window ends
        n = self.channel_send(channel.sends, data, delivery.exclude)
        self.delivered += n
        return n

    def _count(self, n: int) -> None:
        self.delivered += n

    def deliver_inbox(self, delivery: Delivery, offset: int, prev: int) -> int:
        """A cluster's user delivery, with its inbox offset, reached this node: record it
        in the user's stream, give it to the user's local tabs.

        An offset at or below the stream's top was delivered already (the stream's
        window was loaded meanwhile) and is skipped. Ignored without an inbox.
        """
        inbox = self._inbox
        if inbox is None:
            return 0
        stream = stream_of(delivery.target)
        if offset <= inbox.top(stream):
            return 0
        acks = None if delivery.ack is None else self._acks
        meta = OutMeta(offset=offset, from_=delivery.origin, ack=acks is not None or None)
        data = _frame(delivery, meta)
        inbox.seen(stream, offset, prev, data)
        members = self._pool.users.get(UserId(delivery.target))
        n = 0 if not members else _send_all(members.values(), data, delivery.exclude)
        if acks is not None and delivery.ack is not None:
            acks.track(delivery.ack, True, delivery.target, offset, data, n)
        self.delivered += n
        return n

    # The send table ----------------------------------------------------------------

    def _to_inbox(self, d: Delivery) -> int:
        """A user's delivery into their inbox stream, then to their tabs here.

        In a cluster only the bus (its stream assigns the offset; every node
        with a tab delivers on receipt, this one too).
        """
        if self.bus is not None:
            self.bus.send(d)
            return 0
        inbox = self._inbox
        assert inbox is not None  # this entry of the table exists only with one
        stream = stream_of(d.target)
        offset = inbox.next_offset(stream)
        acks = None if d.ack is None else self._acks
        data = _frame(d, OutMeta(offset=offset, from_=d.origin, ack=acks is not None or None))
        inbox.append(stream, offset, data)
        members = self._pool.users.get(UserId(d.target))
        sent = 0 if not members else _send_all(members.values(), data, d.exclude)
        if acks is not None and d.ack is not None:
            acks.track(d.ack, True, d.target, offset, data, sent)
        return sent

    def _to_channel(self, d: Delivery) -> int:
        address = ChannelAddress(d.target)
        if not address.partition(":")[2]:  # a bare hub id: the whole hub
            return self._spread(msgspec.structs.replace(d, kind=TargetKind.HUB))
        if self.bus is not None:
            self.bus.send(d)
            return 0
        channel = self._pool.channel(address)
        if channel is None:
            if self.taps is not None:
                self.taps(d, 0)
            return 0
        if channel.options.conflate_ms and self.conflation.offer(channel, d):
            return 0  # delivered (and counted) when the window ends
        history = self._history
        offset = history.next_offset(address)
        if self.taps is not None:
            self.taps(d, offset)
        meta = OutMeta(address, offset, from_=d.origin)
        data = encode(Outbound(d.type, d.payload, meta, d.error))
        history.append(address, offset, data)
        return self.channel_send(channel.sends, data, d.exclude)

    def _spread(self, d: Delivery) -> int:
        """A hub's or user's delivery: to the other nodes, then to this node's members."""
        if self.bus is not None:
            self.bus.send(d)
        return self._local[d.kind](d)

    def _to_connection(self, d: Delivery) -> int:
        if d.target == d.exclude:
            return 0
        if self.bus is not None and ConnectionId(d.target) not in self._pool.connections:
            self.bus.send(d)
            return 0
        return self._local_connection(d)

    # The local table ----------------------------------------------------------------

    def _local_hub(self, d: Delivery) -> int:
        """Hub deliveries name the hub in ``meta.channel``; no offset."""
        hub = self._pool.hubs.get(HubId(d.target))
        if hub is None or not hub.members:
            return 0
        data = _frame(d, OutMeta(d.target, from_=d.origin))
        return self.hub_send(hub.members, data, d.exclude)

    def _local_user(self, d: Delivery) -> int:
        members = self._pool.users.get(UserId(d.target))
        if not members:
            return 0
        data = _frame(d, OutMeta(from_=d.origin) if d.origin else None)
        return _send_all(members.values(), data, d.exclude)

    def _local_connection(self, d: Delivery) -> int:
        conn = self._pool.connections.get(ConnectionId(d.target))
        if conn is None or d.target == d.exclude:
            return 0
        if self.taps is not None:
            self.taps(d, 0)
        acks = self._acks
        if d.ack is not None and acks is not None:
            offset = acks.next_offset()
            data = _frame(d, OutMeta(offset=offset, from_=d.origin, ack=True))
            conn.sink.send(data)
            acks.track(d.ack, False, d.target, offset, data, 1)
            return 1
        conn.sink.send(_frame(d, OutMeta(from_=d.origin) if d.origin else None))
        return 1
