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

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from wsgate.protocol.address import parse_address
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, From, Outbound, OutMeta, encode
from wsgate.typing import ChannelAddress, ConnectionId, HubId, UserId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.gateway import Gateway

__all__ = ["Fanout"]


def _send_all(members: Iterable[Connection], data: bytes, exclude: ConnectionId | None) -> int:
    sent = 0
    for conn in members:
        if conn.id != exclude:
            conn.sink.send(data)
            sent += 1
    return sent


class Fanout:
    """Local delivery for one gateway."""

    __slots__ = ("_gw",)

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

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
        address: ChannelAddress,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        """Deliver to a view channel or a whole hub; return local deliveries."""
        gw = self._gw
        hub_id, _, view = address.partition(":")
        if not view:
            return self.to_hub(HubId(hub_id), type_, payload, origin, exclude, error)
        channel = gw.pool.channel(address)
        if channel is None:
            return 0
        offset = gw.history.next_offset(address)
        data = encode(Outbound(type_, payload, OutMeta(address, offset, from_=origin), error))
        gw.history.append(address, offset, data)
        return _send_all(channel.members.values(), data, exclude)

    def to_hub(
        self,
        hub_id: HubId,
        type_: str,
        payload: Any,
        origin: From | None = None,
        exclude: ConnectionId | None = None,
        error: bool = False,
    ) -> int:
        hub = self._gw.pool.hubs.get(hub_id)
        if hub is None:
            return 0
        data = encode(Outbound(type_, payload, OutMeta(hub_id, from_=origin), error))
        return _send_all(hub.members.values(), data, exclude)

    def to_user(
        self, user: UserId, type_: str, payload: Any, exclude: ConnectionId | None = None
    ) -> int:
        tabs = self._gw.pool.users.get(user)
        if not tabs:
            return 0
        data = encode(Outbound(type_, payload))
        return _send_all(tabs.values(), data, exclude)

    def to_connection(
        self, cid: ConnectionId, type_: str, payload: Any, in_reply_to: str | None = None
    ) -> int:
        conn = self._gw.pool.connections.get(cid)
        if conn is None:
            return 0
        conn.send_action(type_, payload, in_reply_to=in_reply_to)
        return 1

    @staticmethod
    def valid_channel(text: str) -> bool:
        return parse_address(text) is not None
