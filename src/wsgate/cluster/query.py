"""Cluster-wide answers of the internal API: presence, hubs, one connection.

What each answer costs, and what a node that does not answer does to it:

- **presence of a channel** — read from the :class:`PresenceStore`, which every
  node already writes on each join and leave: one store read of the channel,
  plus one heartbeat read when other nodes hold members (members of a node whose
  heartbeat expired are left out). This node's own members come from its pool,
  so they are exact even before their store write lands.
- **hubs** — nobody stores hub membership, so the node asks: one store read
  for the list of live nodes (each node lists itself in the store under
  :data:`NODES` and refreshes it every :data:`RELIST_EVERY` ticks of the bus, that
  is every ``ttl_s``), then one question per other
  node on its ``node.<id>`` subject, asked all at once and awaited at most
  :data:`ANSWER_TIMEOUT_S`. The answer is the sum of every node's local view;
  the nodes that did not answer in time are named in ``missing``.
- **one connection** — its id names its node: one question to that node,
  awaited at most :data:`ANSWER_TIMEOUT_S`. A node that does not answer in time
  and whose heartbeat has expired holds nothing (:attr:`Found.GONE`); one that
  is alive but silent gives :attr:`Found.SILENT`.

Questions and answers are :class:`~wsgate.cluster.envelope.Envelope`s of
kinds :data:`QUERY` and :data:`ANSWER`, at most once like every broker
message; a lost one is a node that did not answer. At most
:data:`MAX_IN_FLIGHT` questions wait at once; past that, a question is not
sent and counts as not answered. Every waiting question is freed when its
answer comes or its wait ends.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, NamedTuple, TypeVar

import msgspec

from wsgate.backends.base import PresenceStore
from wsgate.cluster import envelope as env
from wsgate.cluster.ports import BusPort, Schedule
from wsgate.cluster.views import HubView, describe, local_hubs, merge_hubs
from wsgate.core.gateway import Gateway
from wsgate.protocol.builtins import Member
from wsgate.typing import ChannelAddress, ConnectionId

__all__ = [
    "ANSWER",
    "ANSWER_TIMEOUT_S",
    "MAX_IN_FLIGHT",
    "NODES",
    "QUERY",
    "RELIST_EVERY",
    "ClusterQuery",
    "Found",
    "Gathered",
]

log = logging.getLogger("wsgate.cluster.query")

QUERY: Final = "qry"
"""Envelope kind of a question: ``target`` its id, ``type`` the question, ``extra`` its argument."""
ANSWER: Final = "ans"
"""Envelope kind of an answer: ``target`` is the question's id, ``payload`` the answer."""

NODES: Final = "@nodes"
"""The presence-store entry listing the cluster's nodes (``@`` is outside the hub
grammar, so no channel can take this name)."""

ANSWER_TIMEOUT_S: Final = 1.0
"""The longest an API answer waits for another node, or for the store."""

MAX_IN_FLIGHT: Final = 256
"""Questions this node may await at once."""

RELIST_EVERY: Final = 3
"""Ticks of the bus between two writes of this node's :data:`NODES` entry
(a tick is a third of the heartbeat TTL: once per TTL)."""

_T = TypeVar("_T")


class Found(enum.Enum):
    """What the owner node said about a connection."""

    FOUND = "found"
    """It holds the connection: the body is its status."""
    GONE = "gone"
    """It does not hold it (or the node is dead)."""
    SILENT = "silent"
    """It is alive but did not answer within :data:`ANSWER_TIMEOUT_S`."""


class Gathered(NamedTuple):
    """A cluster-wide ``GET /v1/hubs``: the merged rows and who is missing from them."""

    hubs: list[HubView]
    missing: list[str]
    """Ids of the nodes that did not answer in time (``*`` when the node list could
    not be read: only this node's view is in ``hubs``)."""


_member: Final = msgspec.json.Decoder(Member)
_hubs: Final = msgspec.json.Decoder(list[HubView])


def _decode_hubs(node: str, data: bytes) -> list[HubView] | None:
    try:
        return _hubs.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.warning("dropped a malformed hubs answer from node %s", node)
        return None


class ClusterQuery:
    """Asks the other nodes, and answers them (see the module docstring).

    Call :meth:`start` once the bus is started and :meth:`close` after the
    bus's ticker stopped (so no :meth:`relist` lists it again) and before the
    backend closes. :meth:`on_query` and :meth:`on_answer` receive the
    envelopes of kinds :data:`QUERY` and :data:`ANSWER`.
    """

    def __init__(
        self, bus: BusPort, gateway: Gateway, store: PresenceStore, schedule: Schedule
    ) -> None:
        """Registers :meth:`relist` every :data:`RELIST_EVERY` ticks on ``schedule``."""
        self._bus = bus
        self._gw = gateway
        self._store = store
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        """Question id → its answer; bounded by :data:`MAX_IN_FLIGHT`, freed when done."""
        self._seq = 0
        self._answers: dict[str, Callable[[bytes], bytes]] = {
            "hubs": self._local_hubs,
            "conn": self._local_connection,
        }
        """Question → this node's answer (JSON text in, JSON text out)."""
        schedule.every(RELIST_EVERY, "query.relist", self.relist)

    async def start(self) -> None:
        """List this node in :data:`NODES` (before the bus's ticker starts, which
        then calls :meth:`relist`); raises what the store raises."""
        await self.relist()

    async def close(self) -> None:
        """Leave :data:`NODES` (best effort: dead nodes are purged)."""
        try:
            await asyncio.wait_for(self._store.remove(NODES, self._gw.node_id), ANSWER_TIMEOUT_S)
        except Exception:
            log.warning("could not leave the node list; others purge it when it stops beating")

    async def relist(self) -> None:
        """(Re)write this node's entry in :data:`NODES`; raises what the store raises."""
        me = self._gw.node_id
        await self._store.add(NODES, me, me, b"1")

    # Answers for the API ---------------------------------------------------------

    async def presence(self, address: ChannelAddress) -> list[Member] | None:
        """Every live member of ``address``: this node's, then the others' by connection id.

        ``None`` when the store did not answer within :data:`ANSWER_TIMEOUT_S`.
        """
        me = self._gw.node_id
        try:
            stored = await self._bounded(self._store.members(address))
            nodes = {node for node, _ in stored.values()} - {me}
            dead = await self._bounded(self._store.dead_nodes(nodes)) if nodes else set()
        except Exception:
            log.exception("presence store unavailable for %s", address)
            return None
        channel = self._gw.pool.channel(address)
        members = [] if channel is None else [c.member for c in channel.members.values()]
        for cid, (node, data) in sorted(stored.items()):
            if node == me or node in dead:
                continue
            try:
                members.append(_member.decode(data))
            except msgspec.DecodeError:
                log.warning("skipped a malformed presence entry %s in %s", cid, address)
        return members

    async def hubs(self) -> Gathered:
        """Every node's hubs, summed; the nodes that did not answer are ``missing``."""
        views = [local_hubs(self._gw.pool)]
        try:
            others = sorted(await self._others())
        except Exception:
            log.exception("node list unavailable; answering with this node's hubs only")
            return Gathered(merge_hubs(views), ["*"])
        answers = await asyncio.gather(*(self._ask(node, "hubs", b"null") for node in others))
        missing = []
        for node, data in zip(others, answers, strict=True):
            view = None if data is None else _decode_hubs(node, data)
            if view is None:
                missing.append(node)
            else:
                views.append(view)
        return Gathered(merge_hubs(views), missing)

    async def connection(self, cid: ConnectionId) -> tuple[Found, bytes]:
        """The status of a connection of another node, as JSON text (``b""`` unless found)."""
        node = cid.partition(".")[0]
        data = await self._ask(node, "conn", msgspec.json.encode(cid))
        if data is not None:
            return (Found.GONE, b"") if data == b"null" else (Found.FOUND, data)
        try:
            dead = await self._bounded(self._store.dead_nodes({node}))
        except Exception:
            log.exception("could not tell whether node %s is alive", node)
            return Found.SILENT, b""
        return (Found.GONE if dead else Found.SILENT), b""

    async def nodes(self) -> list[str]:
        """Every live node's id, this one's first; raises what the store raises (bounded
        by :data:`ANSWER_TIMEOUT_S` per read)."""
        return [self._gw.node_id, *sorted(await self._others())]

    async def _others(self) -> set[str]:
        """The other live nodes; purges the listed nodes whose heartbeat expired."""
        listed = await self._bounded(self._store.members(NODES))
        others = {node for node, _ in listed.values()} - {self._gw.node_id}
        if others:
            dead = await self._bounded(self._store.dead_nodes(others))
            if dead:
                self._bus.spawn(self._store.purge(NODES, dead))
            others -= dead
        return others

    @staticmethod
    async def _bounded(call: Coroutine[Any, Any, _T]) -> _T:
        return await asyncio.wait_for(call, ANSWER_TIMEOUT_S)

    # The question and answer exchange ---------------------------------------------

    async def _ask(self, node: str, question: str, arg: bytes) -> bytes | None:
        """Ask ``node``; its answer, or ``None`` when none came in time (or too many wait)."""
        if len(self._waiting) >= MAX_IN_FLIGHT:
            log.warning("%d cluster questions in flight; not asking node %s", MAX_IN_FLIGHT, node)
            return None
        self._seq += 1
        qid = f"{self._gw.node_id}.{self._seq}"
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[qid] = answer
        envelope = env.Envelope(QUERY, qid, self._gw.node_id, question, extra=arg)
        try:
            self._bus.publish(env.subject("node", node), env.encode(envelope))
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(qid, None)

    def on_query(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        """Another node asks: answer on its node subject."""
        answer = self._answers.get(envelope.type)
        if answer is None:
            log.warning("dropped a question of unknown type %r", envelope.type)
            return
        try:
            data = answer(envelope.extra)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("dropped a malformed %r question from %s", envelope.type, envelope.origin)
            return
        reply = env.Envelope(ANSWER, envelope.target, self._gw.node_id, payload=data)
        self._bus.publish(env.subject("node", envelope.origin), env.encode(reply))

    def on_answer(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        """An answer to one of this node's questions (a late one finds nobody waiting)."""
        waiting = self._waiting.get(envelope.target)
        if waiting is not None and not waiting.done():
            waiting.set_result(envelope.payload)

    def _local_hubs(self, arg: bytes) -> bytes:
        return msgspec.json.encode(local_hubs(self._gw.pool))

    def _local_connection(self, arg: bytes) -> bytes:
        cid = msgspec.json.decode(arg, type=str)
        conn = self._gw.pool.connections.get(ConnectionId(cid))
        return b"null" if conn is None else msgspec.json.encode(describe(conn))
