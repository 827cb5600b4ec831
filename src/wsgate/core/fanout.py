"""Delivery: relays from clients and publishes from services, to local members.

An action for many connections is encoded once and the same ``bytes`` object
handed to every sink (the transport frames it once too). Targets:

- a connection (by id), a user (every tab), a view channel, a hub;
- ``exclude`` skips one connection (the sender of a relay, unless it asked
  for ``meta.echo``).

Actions delivered to a view channel get the next ``meta.offset`` of its
history and are stored there, so a client that rejoins with ``since``
recovers them. Hub-wide deliveries carry no offset (hubs are not streams).
Nothing reaches a connection outside the target: members are looked up in
the target's own index, never filtered from a wider set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, From, Outbound, OutMeta, encode
from wsgate.typing import ChannelAddress, ConnectionId, HubId, UserId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.gateway import Gateway

__all__ = ["Bus", "Deliver", "Fanout"]

Deliver = Callable[[str, str, Any, From | None, ConnectionId | None, bool], int]
"""``(target, type, payload, origin, exclude, error) -> local deliveries``."""


class Bus(Protocol):
    """Delivery beyond this node (:mod:`wsgate.cluster`). Never blocks.

    ``kind`` is ``chan``, ``hub``, ``user`` or ``conn``. The bus delivers on
    the other nodes (and, for channels, on this one too) by calling the
    ``deliver_*`` methods of their :class:`Fanout`.
    """

    def send(
        self,
        kind: str,
        target: str,
        type_: str,
        payload: Any,
        origin: From | None,
        exclude: ConnectionId | None,
        error: bool,
    ) -> None: ...


def _send_each(
    sends: dict[ConnectionId, Callable[[bytes], None]], data: bytes, exclude: ConnectionId | None
) -> int:
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


class Fanout:
    """Local delivery for one gateway."""

    __slots__ = ("_by_kind", "_gw", "bus")

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self.bus: Bus | None = None
        """Set in a cluster: delivery beyond this node."""
        self._by_kind: dict[str, Deliver] = {
            "connection": self.to_connection,
            "user": self.to_user,
            "channel": self.to_channel,
            "hub": self.to_hub,
        }

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
        origin = From(conn.principal.sub, conn.id)
        exclude = None if meta.echo else conn.id
        self.to_channel(channel, action.type, action.payload, origin, exclude, action.error)

    def to_channel(
        self,
        target: str,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to a view channel or a whole hub; return local deliveries.

        In a cluster a view channel's action goes through the bus, which
        assigns its offset; every node (this one too) delivers it on receipt
        (:meth:`deliver_channel`), so the count returned is 0.
        """
        gw = self._gw
        address = ChannelAddress(target)
        hub_id, _, view = address.partition(":")
        if not view:
            return self.to_hub(HubId(hub_id), type_, payload, origin, exclude, error)
        if self.bus is not None:
            self.bus.send("chan", address, type_, payload, origin, exclude, error)
            return 0
        channel = gw.pool.channel(address)
        if channel is None:
            return 0
        offset = gw.history.next_offset(address)
        data = encode(Outbound(type_, payload, OutMeta(address, offset, from_=origin), error))
        gw.history.append(address, offset, data)
        return _send_each(channel.sends, data, exclude)

    def deliver_channel(
        self,
        address: ChannelAddress,
        type_: str,
        payload: Any,
        origin: From | None,
        exclude: ConnectionId | None,
        error: bool,
        offset: int,
        prev: int,
    ) -> int:
        """A cluster's channel action reached this node: record it, give it to local members."""
        gw = self._gw
        data = encode(Outbound(type_, payload, OutMeta(address, offset, from_=origin), error))
        gw.history.seen(address, offset, prev, data)
        channel = gw.pool.channel(address)
        if channel is None:
            return 0
        return _send_each(channel.sends, data, exclude)

    def to_hub(
        self,
        hub_id: str,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to every connection of a hub (and, in a cluster, the other nodes')."""
        return self._spread("hub", hub_id, type_, payload, origin, exclude, error)

    def to_user(
        self,
        user: str,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to every connection (tab) of ``user`` (on every node, in a cluster)."""
        return self._spread("user", user, type_, payload, origin, exclude, error)

    def _spread(
        self,
        kind: str,
        target: str,
        type_: str,
        payload: Any,
        origin: From | None,
        exclude: ConnectionId | None,
        error: bool,
    ) -> int:
        if self.bus is not None:
            self.bus.send(kind, target, type_, payload, origin, exclude, error)
        return self.deliver_local(kind, target, type_, payload, origin, exclude, error)

    def deliver_local(
        self,
        kind: str,
        target: str,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to this node's connections of a hub (``kind="hub"``) or user (``"user"``).

        Hub deliveries name the hub in ``meta.channel``; neither carries an offset.
        """
        pool = self._gw.pool
        if kind == "hub":
            hub = pool.hubs.get(HubId(target))
            members = None if hub is None else hub.members
            meta: OutMeta | None = OutMeta(target, from_=origin)
        else:
            members = pool.users.get(UserId(target))
            meta = OutMeta(from_=origin) if origin else None
        if not members:
            return 0
        data = encode(Outbound(type_, payload, meta, error))
        return _send_all(members.values(), data, exclude)

    def to_connection(
        self,
        cid: str,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to one connection by id (on its node, in a cluster)."""
        conn = self._gw.pool.connections.get(ConnectionId(cid))
        if conn is None and self.bus is not None and cid != exclude:
            self.bus.send("conn", cid, type_, payload, origin, exclude, error)
            return 0
        if conn is None or cid == exclude:
            return 0
        data = encode(Outbound(type_, payload, OutMeta(from_=origin) if origin else None, error))
        conn.sink.send(data)
        return 1

    def to_target(
        self,
        kind: str,
        value: str,
        type_: str,
        payload: Any,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to ``kind`` (``connection``, ``user``, ``channel``, ``hub``) ``value``."""
        deliver: Deliver = self._by_kind[kind]
        return deliver(value, type_, payload, None, exclude, error)
