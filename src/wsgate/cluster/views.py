"""What one node says about its own connections and hubs, and how nodes' views add up.

Pure functions over the node's :class:`~wsgate.core.pool.Pool`: the internal
API answers a single node with them, and in a cluster each node answers the
others' questions with the same ones (one path per answer), so a cluster-wide
answer is the merge of the nodes' local views.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from wsgate.core.connection import Connection
from wsgate.core.pool import Pool
from wsgate.transport.base import Described

__all__ = ["ChannelCount", "HubView", "describe", "local_hubs", "merge_hubs"]


class ChannelCount(msgspec.Struct):
    """A view channel and its number of members (on the nodes that answered)."""

    channel: str
    count: int


class HubView(msgspec.Struct):
    """One row of ``GET /v1/hubs``."""

    hub: str
    connections: int
    channels: list[ChannelCount]


def describe(conn: Connection) -> dict[str, object]:
    """The body of ``GET /v1/connections/{id}`` for a connection of this node."""
    return {
        "connectionId": conn.id,
        "userId": conn.principal.sub or None,
        "hubs": list(conn.hubs),
        "channels": sorted(conn.channels or ()),
        "ip": conn.peer,
        "connectedAt": conn.connected_at,
        **(
            {"userAgent": sink.user_agent, "lastActiveAt": sink.last_active}
            if isinstance(sink := conn.sink, Described)
            else {"userAgent": "", "lastActiveAt": conn.connected_at}
        ),
    }


def local_hubs(pool: Pool) -> list[HubView]:
    """This node's hubs, each with its local connections and its channels' local members.

    O(hubs + channels) of this node.
    """
    return [
        HubView(
            hub.id,
            len(hub.members),
            [ChannelCount(a, len(c.members)) for a, c in hub.channels.items()],
        )
        for hub in pool.hubs.values()
    ]


def merge_hubs(views: Iterable[list[HubView]]) -> list[HubView]:
    """Add up several nodes' views: one row per hub, counts summed.

    Rows keep the order in which hubs and channels first appear (the first
    view's order first), so one view merges to itself.
    """
    hubs: dict[str, tuple[int, dict[str, int]]] = {}
    for view in views:
        for row in view:
            connections, channels = hubs.get(row.hub, (0, {}))
            for ch in row.channels:
                channels[ch.channel] = channels.get(ch.channel, 0) + ch.count
            hubs[row.hub] = (connections + row.connections, channels)
    return [
        HubView(hub, connections, [ChannelCount(a, n) for a, n in channels.items()])
        for hub, (connections, channels) in hubs.items()
    ]
