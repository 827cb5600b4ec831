"""Presence across nodes: a replica of the other nodes' members per channel.

Each node keeps, for the channels it has local members in, the members on
other nodes (``Channel.remote``), loaded from the :class:`PresenceStore` when
the channel is prepared and kept current by diffs the nodes publish on the
channel's subject. Local joins and leaves are written to the store and
published. Nodes beat a heartbeat with a TTL on every tick of the bus's
loop (a tick is ``ttl_s / 3``); every other tick (``ttl_s / 1.5``) each node
asks which nodes of its replicas stopped beating, drops their members and
tells its local members (``PRESENCE`` left-diffs) — so the members of a node
that died expire within ``ttl_s`` and a half.

A diff may overtake the store read that fills a replica (a member that left
may briefly show again); the next diff or sweep corrects it. A diff that
changes nothing in the replica (a repeat, or a join the store read already
brought) is not passed on to the local members.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from wsgate.backends.base import PresenceStore
from wsgate.cluster import envelope as env
from wsgate.cluster.ports import BusPort, Schedule
from wsgate.core.connection import Connection
from wsgate.core.gateway import Gateway
from wsgate.protocol.builtins import Member
from wsgate.typing import ChannelAddress, ConnectionId

__all__ = ["BEAT_EVERY", "SWEEP_EVERY", "ClusterPresence", "tick_s"]

log = logging.getLogger("wsgate.cluster.presence")


class _Diff(msgspec.Struct, omit_defaults=True):
    joined: list[Member] = []
    left: list[Member] = []


BEAT_EVERY: Final = 1
"""The heartbeat is written every tick (:func:`tick_s`): three beats per TTL."""
SWEEP_EVERY: Final = 2
"""Dead nodes are looked for every other tick."""


def tick_s(ttl_s: float) -> float:
    """The bus's tick for a heartbeat TTL: a third of it, at least 50 ms."""
    return max(ttl_s / 3, 0.05)


_member_codec: Final = msgspec.json.Decoder(Member)


def _node(cid: str) -> str:
    return cid.partition(".")[0]


class ClusterPresence:
    """One node's view of who is where on the others (see the module docstring)."""

    def __init__(
        self,
        bus: BusPort,
        gateway: Gateway,
        store: PresenceStore,
        schedule: Schedule,
        *,
        ttl_s: float,
        forget_nodes: Callable[[set[str]], Awaitable[None]],
    ) -> None:
        """Registers :meth:`beat` (every :data:`BEAT_EVERY` ticks) and :meth:`sweep`
        (every :data:`SWEEP_EVERY`) on ``schedule``, whose ticks must be
        :func:`tick_s` of ``ttl_s``. ``forget_nodes`` is told the nodes a sweep
        found dead, before their members leave (the shared connection counts)."""
        self._bus = bus
        self._gw = gateway
        self._store = store
        self.ttl_s = ttl_s
        self._forget_nodes = forget_nodes
        self._replicas: dict[ChannelAddress, dict[ConnectionId, Member]] = {}
        schedule.every(BEAT_EVERY, "presence.beat", self.beat)
        schedule.every(SWEEP_EVERY, "presence.sweep", self.sweep)

    async def beat(self) -> None:
        """Write this node's heartbeat (TTL ``ttl_s``); raises what the store raises.

        Once at the bus's start, before its ticker starts; then on the ticks."""
        await self._store.beat(self._gw.node_id, self.ttl_s)

    # Replicas ------------------------------------------------------------------

    def replica(self, address: ChannelAddress) -> dict[ConnectionId, Member]:
        return self._replicas.setdefault(address, {})

    def forget(self, address: ChannelAddress) -> None:
        self._replicas.pop(address, None)

    async def load(self, address: ChannelAddress) -> None:
        members = await self._store.members(address)
        replica = self.replica(address)
        me = self._gw.node_id
        for cid, (node, data) in members.items():
            if node != me:
                try:
                    replica[ConnectionId(cid)] = _member_codec.decode(data)
                except msgspec.DecodeError:
                    log.warning("skipped a malformed presence entry in %s", address)

    # Local changes -------------------------------------------------------------

    def local_joined(self, conn: Connection, address: ChannelAddress) -> None:
        member = conn.member
        data = msgspec.json.encode(member)
        self._bus.spawn(self._store.add(address, conn.id, self._gw.node_id, data))
        self._publish(address, _Diff(joined=[member]))

    def local_left(self, conn: Connection, address: ChannelAddress) -> None:
        self._bus.spawn(self._store.remove(address, conn.id))
        self._publish(address, _Diff(left=[conn.member]))

    def _publish(self, address: ChannelAddress, diff: _Diff) -> None:
        data = env.encode(
            env.Envelope(env.PRESENCE, address, self._gw.node_id, extra=msgspec.json.encode(diff))
        )
        self._bus.publish(env.subject(env.CHANNEL, address), data)

    # Remote changes --------------------------------------------------------------

    def on_diff(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        if envelope.origin == self._gw.node_id:
            return
        address = ChannelAddress(envelope.target)
        replica = self._replicas.get(address)
        if replica is None:
            return
        try:
            diff = msgspec.json.decode(envelope.extra, type=_Diff)
        except msgspec.DecodeError:
            log.warning("dropped a malformed presence diff for %s", address)
            return
        # Only real changes reach the batcher: it cancels a pending join against a
        # later leave, so a repeated join (or a leave of someone absent) reported
        # as a change would make it drop the real one after it.
        joined: list[Member] = []
        for member in diff.joined:
            cid = ConnectionId(member.connectionId)
            if cid not in replica:
                joined.append(member)
            replica[cid] = member
        left = [m for m in diff.left if replica.pop(ConnectionId(m.connectionId), None) is not None]
        channel = self._gw.pool.channel(address)
        if channel is not None and (joined or left):
            self._gw.presence.remote(channel, joined, left)

    async def sweep(self) -> None:
        """Drop the members of nodes whose heartbeat expired, and tell local members."""
        nodes = {_node(cid) for replica in self._replicas.values() for cid in replica}
        nodes.discard(self._gw.node_id)
        if not nodes:
            return
        dead = await self._store.dead_nodes(nodes)
        if not dead:
            return
        log.warning("nodes %s stopped beating; their members leave", sorted(dead))
        await self._forget_nodes(dead)
        for address, replica in list(self._replicas.items()):
            gone = [m for cid, m in replica.items() if _node(cid) in dead]
            if not gone:
                continue
            for member in gone:
                del replica[ConnectionId(member.connectionId)]
            channel = self._gw.pool.channel(address)
            if channel is not None:
                self._gw.presence.remote(channel, [], gone)
            await self._store.purge(address, dead)
