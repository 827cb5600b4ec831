"""The cluster bus: the core's deliveries over a broker, with interest routing.

One :class:`ClusterBus` per node. It is, for the core:

- the fan-out's :class:`~wsgate.core.fanout.Bus`: view-channel actions are
  published to the channel's stream (the broker assigns the offset) and
  delivered on every node on receipt, this one included; hub, user and
  connection deliveries go to the other nodes' subjects;
- a lifecycle :class:`~wsgate.core.gateway.Observer`: it subscribes to a
  hub's, user's or channel's subject while this node has a local member
  (reference-counted through the pool: the first member subscribes, the last
  unsubscribes), so a node never receives traffic nobody here wants; and it
  mirrors local joins and leaves into cluster presence;
- a join gate: the first local JOIN of a channel waits until the
  subscription is active, the channel's stream window is loaded into the
  node's recent history and the other nodes' members are known — so JOINED
  carries every member and ``since`` recovers synchronously afterwards.

Deliveries of one channel arrive in offset order with ``prev``; a gap (the
broker restarted, a message was lost) is recovered from the stream before
later messages are delivered.

The bus owns the cluster's one periodic loop, :attr:`ClusterBus.ticker`
(a tick is ``presence_ttl_s / 3``): each part registers what it does per
tick when it is built — the heartbeat every tick and the dead-node sweep
every 2nd (:mod:`~wsgate.cluster.presence`), re-listing the node for cluster
queries every 3rd (:mod:`~wsgate.cluster.query`), reloading the shared
routes every 15th (:mod:`~wsgate.cluster.shared`), renewing this node's taps
and dropping expired forwarders every tick (:mod:`~wsgate.cluster.taps`). The parts see the bus
through :class:`~wsgate.cluster.ports.BusPort` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import msgspec

from wsgate.backends.base import Backend, Delivery
from wsgate.cluster import envelope as env
from wsgate.cluster.acks import SharedAcks
from wsgate.cluster.inbox import InboxPreload
from wsgate.cluster.presence import ClusterPresence, tick_s
from wsgate.cluster.query import ANSWER, QUERY, ClusterQuery
from wsgate.cluster.shared import ROUTES_SUBJECT, ClusterLimits, SharedRoutes
from wsgate.cluster.taps import TAP_CONTROL, TAPPED, TAPS_SUBJECT, ClusterTaps
from wsgate.cluster.ticker import Ticker
from wsgate.core.connection import Connection
from wsgate.core.delivery import Delivery as CoreDelivery
from wsgate.core.delivery import TargetKind
from wsgate.core.gateway import Admission, Gateway, Pending
from wsgate.core.inbox import stream_of
from wsgate.core.pool import Channel
from wsgate.protocol.address import Address
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import From, Outbound, OutMeta, encode
from wsgate.routing.table import RouteTable
from wsgate.typing import ChannelAddress, ConnectionId, HubId, NodeId, UserId

__all__ = ["ClusterBus"]

log = logging.getLogger("wsgate.cluster")

Resume = Callable[[ErrorCode | None], None]

PREPARE_TIMEOUT_S = 5.0
"""A first local JOIN of a channel waits at most this for the broker, then is
refused ``UPSTREAM_UNAVAILABLE`` (the client may retry)."""

CLOSE_WAIT_S = 2.0
""":meth:`ClusterBus.close` waits at most this for its cancelled tasks to end."""

RAW_TYPE = ""
"""A connection envelope without a type carries a ready text message."""


class _Control(msgspec.Struct, omit_defaults=True):
    op: Literal["disconnect", "join", "leave", "refused"]
    code: int = 1000
    reason: str = ""
    channel: str = ""


class ClusterBus:
    """Connects one node's core to the cluster backend (see the module docstring)."""

    _gw: Gateway
    presence: ClusterPresence
    query: ClusterQuery
    """Cluster-wide answers of the internal API (presence, hubs, connections)."""
    routes: SharedRoutes
    """Self-registrations shared by every node."""
    taps: ClusterTaps
    """Taps across nodes: this node's taps get every node's actions (``wsgate.api.tap``)."""
    _receivers: dict[str, Callable[[env.Envelope, int, int], None]]
    """Given by :meth:`attach`: the gateway is built with this bus."""

    def __init__(
        self,
        backend: Backend,
        routes: RouteTable,
        *,
        node_id: NodeId,
        admission: Admission | None = None,
        presence_ttl_s: float = 10.0,
        max_connections_per_user: int = 0,
        inbox: bool = False,
        acks: SharedAcks | None = None,
    ) -> None:
        """Build the bus, then the :class:`Gateway` with it (``observers``, ``gates``,
        ``admission=bus.limits``, ``bus``, ``shared=bus.limits``, ``attached``),
        then :meth:`start`. ``admission`` is the connect hook the per-user
        connection cap wraps; with ``inbox`` (``[inbox] enabled``) a user's
        deliveries go through their inbox stream and :attr:`admission` loads it
        first (:mod:`wsgate.cluster.inbox`); ``acks``: acknowledged delivery's
        ledger (:mod:`wsgate.cluster.acks`), the gateway's too."""
        self._backend = backend
        self._broker = backend.broker
        self.node = node_id
        self._presence_ttl_s = presence_ttl_s
        self._routes = routes
        self.ticker = Ticker(tick_s(presence_ttl_s))
        """The bus's one periodic loop; its parts register on it in :meth:`attach`
        (:attr:`Ticker.failures` counts each part's failed rounds)."""
        self.limits = ClusterLimits(
            self, backend, max_per_user=max_connections_per_user, inner=admission
        )
        self.acks = acks
        """The cluster's ledger of acknowledged deliveries (``None``: off)."""
        restore = None if acks is None else acks.restore
        self.inbox = InboxPreload(self, backend, self.limits, restore) if inbox else None
        """Loads a user's inbox stream before their first tab here is admitted."""
        self.admission: Admission = self.limits if self.inbox is None else self.inbox
        """The admission the gateway is built with: the inbox preload (if on), then
        the per-user connection cap, then the connect hook."""
        self._ready: set[ChannelAddress] = set()
        """Channels whose subscription is active and window loaded."""
        self._preparing: dict[ChannelAddress, list[Resume]] = {}
        self._recovering: dict[ChannelAddress, list[tuple[env.Envelope, int, int]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.lag_s = 0.0
        """Seconds from publish (the envelope's ``sent``, the publisher's clock) to receipt,
        summed over :attr:`lag_count` deliveries received (metrics; negative skew counts 0)."""
        self.lag_count = 0
        """Deliveries received from the broker with a send time."""
        self.joins_refused = 0
        """Server-side joins refused: asked by another node and refused here, or
        asked by this node's API and refused where the connection lives (logged too)."""

    # Lifecycle -------------------------------------------------------------------

    def attach(self, gateway: Gateway) -> None:
        """The gateway this bus serves (called from its constructor).

        Builds the parts; each registers its tick jobs on :attr:`ticker` as it
        is built, so a tick runs them in this order: heartbeat, sweep, re-list,
        routes reload.
        """
        self._gw = gateway
        store = self._backend.presence
        self.presence = ClusterPresence(
            self,
            gateway,
            store,
            self.ticker,
            ttl_s=self._presence_ttl_s,
            forget_nodes=self.limits.forget_nodes,
        )
        self.query = ClusterQuery(self, gateway, store, self.ticker)
        self.routes = SharedRoutes(self, self._backend, self._routes, self.ticker)
        self.taps = ClusterTaps(
            self, self._broker, gateway.taps, self.ticker, tick_s=tick_s(self._presence_ttl_s)
        )
        self.limits.attach(gateway)
        if self.inbox is not None:
            self.inbox.attach(gateway)
        self._receivers = {
            env.CHANNEL: self._on_channel,
            env.HUB: self._on_spread,
            env.USER: self._on_user,
            env.CONNECTION: self._on_connection,
            env.PRESENCE: self.presence.on_diff,
            env.CONTROL: self._on_control,
            QUERY: self.query.on_query,
            ANSWER: self.query.on_answer,
            TAP_CONTROL: self.taps.on_control,
            TAPPED: self.taps.on_forward,
        }

    async def start(self) -> None:
        """Connect the broker, subscribe to this node's subject, load the shared
        routes, beat and list this node once, then start the ticker.

        After the gateway was built with this bus (:meth:`attach` has run).
        Raises what the backend raises (the node does not start).
        """
        await self._broker.start(self._on_delivery)
        self._broker.subscribe(env.subject("node", self.node))
        self._broker.subscribe(ROUTES_SUBJECT)
        self._broker.subscribe(TAPS_SUBJECT)
        await self._broker.flush()
        await self.routes.reload()
        await self.presence.beat()
        await self.query.start()
        self.ticker.start()

    async def close(self) -> None:
        """Stop the ticker, leave the node list, stop this bus's tasks, then close
        the backend.

        The ticker's loop and the tasks are awaited (each bounded by
        :data:`CLOSE_WAIT_S`) before the backend closes: a task cancelled but
        still running could otherwise check out a new connection from a pool
        that was just emptied, and that socket would never be closed. The
        ticker stops first, so no re-list lists this node again after it left.
        """
        try:
            await self.ticker.close()
            await self.query.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
                if stuck:
                    log.warning("cluster bus: %d tasks still running at close", len(stuck))
        finally:
            await self._backend.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster task failed", exc_info=task.exception())

    @property
    def broker_connected(self) -> bool:
        """Whether the broker is connected to its server now (tests, metrics, readiness)."""
        return self._broker.connected

    @property
    def broker_dropped(self) -> int:
        """Messages the broker dropped (queue full) or lost (not sent) since start; 0 for a
        broker that counts neither (in process). For metrics."""
        broker = self._broker
        return int(getattr(broker, "dropped", 0)) + int(getattr(broker, "lost", 0))

    @property
    def broker_reconnects(self) -> int:
        """Times the broker re-established a lost server connection since start; 0 for a
        broker that never loses one (in process). For metrics."""
        return int(getattr(self._broker, "reconnects", 0))

    async def flush(self) -> None:
        """Wait until the broker's server processed what this node sent so far, its
        subscriptions included (tests: a subscription made on connect is live)."""
        await self._broker.flush()

    def backend_received(self) -> dict[str, int]:
        """Messages this node's broker delivered, per subject (tests, metrics)."""
        return dict(self._broker.received)

    # Outbound (core Bus) -------------------------------------------------------------

    def send(self, delivery: CoreDelivery) -> None:
        """The core's :class:`~wsgate.core.fanout.Bus`: one delivery to the other nodes.

        A view channel's action goes through the channel's stream (the broker
        assigns its offset; every node delivers it on receipt, this one too);
        a connection's goes to its node; a hub's or user's to their subject.
        """
        kind, target = delivery.kind, delivery.target
        if kind is TargetKind.CONNECTION:
            node = target.partition(".")[0]
            if node == self.node:
                return  # ours, and gone
            subject = env.subject("node", node)
        else:
            subject = env.subject(env.KIND_NAMES[kind], target)
        data = env.encode(env.Envelope.from_delivery(delivery, self.node))
        if kind is TargetKind.CHANNEL:
            self._broker.publish_stream(subject, target, data)
        elif kind is TargetKind.USER and self.inbox is not None:
            stream = stream_of(target)
            self._broker.publish_stream(env.subject(env.CHANNEL, stream), stream, data)
        else:
            self._broker.publish(subject, data)

    def publish(self, subject: str, data: bytes) -> None:
        """Send raw envelope bytes (presence diffs)."""
        self._broker.publish(subject, data)

    def control(self, kind: str, target: str, subject: str, op: _Control) -> None:
        data = env.encode(env.Envelope(kind, target, self.node, extra=msgspec.json.encode(op)))
        self._broker.publish(subject, data)

    def raw_to_connection(self, cid: str, data: bytes) -> None:
        """Send a ready text message (AWS ``post_to_connection``) to a connection elsewhere."""
        node = cid.partition(".")[0]
        envelope = env.Envelope(env.CONNECTION, cid, self.node, RAW_TYPE, data)
        self._broker.publish(env.subject("node", node), env.encode(envelope))

    def disconnect(self, cid: str, code: int, reason: str) -> None:
        """Close a connection on another node."""
        node = cid.partition(".")[0]
        op = _Control("disconnect", code=code, reason=reason)
        self.control(env.CONTROL, cid, env.subject("node", node), op)

    def disconnect_user(self, user: str, code: int, reason: str) -> None:
        """Close every connection of ``user`` on the other nodes."""
        op = _Control("disconnect", code=code, reason=reason)
        self.control(env.CONTROL, "user:" + user, env.subject(env.USER, user), op)

    def membership(self, cid: str, channel: str, join: bool) -> None:
        """Join or remove a connection of another node server-side."""
        node = cid.partition(".")[0]
        op = _Control("join" if join else "leave", channel=channel)
        self.control(env.CONTROL, cid, env.subject("node", node), op)

    # Inbound -------------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        if delivery.subject == ROUTES_SUBJECT:
            self.routes.on_change(delivery.data)
            return
        envelope = env.decode(delivery.data)
        if envelope is None:
            log.warning("dropped a message on %s that is not an envelope", delivery.subject)
            return
        if envelope.sent:  # two additions: the hot path keeps counters only
            self.lag_s += max(0.0, time.time() - envelope.sent)
            self.lag_count += 1
        receive = self._receivers.get(envelope.kind)
        if receive is None:
            log.warning("dropped a message of unknown kind %r", envelope.kind)
            return
        try:
            receive(envelope, delivery.offset, delivery.prev)
        except Exception:
            log.exception("failed to deliver a %s message", envelope.kind)

    @staticmethod
    def _origin(envelope: env.Envelope) -> From | None:
        if not envelope.from_conn:
            return None
        return From(envelope.from_user, envelope.from_conn)

    def _on_channel(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        address = ChannelAddress(envelope.target)
        ready = address in self._ready
        top = self._gw.history.top(address) if ready else 0
        self._on_stream(address, envelope, offset, prev, ready, top, self._deliver_channel)

    def _on_stream(
        self,
        stream: ChannelAddress,
        envelope: env.Envelope,
        offset: int,
        prev: int,
        ready: bool,
        top: int,
        deliver: Callable[[env.Envelope, int, int], None],
    ) -> None:
        """A stream's message (a channel's, a user's inbox): in offset order, a gap
        recovered from the stream before anything newer is delivered, while this node
        is ``ready`` for it (its window loaded; ``top`` its last offset here)."""
        queued = self._recovering.get(stream)
        if queued is not None:
            queued.append((envelope, offset, prev))
            return
        if ready:
            if prev != top and offset > top:
                # A gap: fetch what was missed before delivering anything newer.
                self._recovering[stream] = [(envelope, offset, prev)]
                self.spawn(self._recover(stream, top, deliver))
                return
            if offset <= top:
                return  # already delivered (a replay overlapping live traffic)
        deliver(envelope, offset, prev)

    def _frame(self, address: ChannelAddress, data: bytes, offset: int) -> bytes:
        """The client frame of a stored envelope (empty when it is not one)."""
        envelope = env.decode(data)
        if envelope is None:
            return b""
        meta = OutMeta(address, offset, from_=self._origin(envelope))
        payload = msgspec.Raw(envelope.payload)
        return encode(Outbound(envelope.type, payload, meta, envelope.error))

    def _deliver_channel(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        delivery = envelope.to_delivery()
        if delivery is not None:
            self._gw.fanout.deliver_channel(delivery, offset, prev)

    async def _recover(
        self,
        address: ChannelAddress,
        top: int,
        deliver: Callable[[env.Envelope, int, int], None],
    ) -> None:
        try:
            replay = await self._backend.history.since(address, top)
        except Exception:
            log.exception("could not recover %s after a gap", address)
            replay = None
        last = top
        if replay is not None:
            for offset, data in replay.entries:
                envelope = env.decode(data)
                if envelope is not None:
                    deliver(envelope, offset, last)
                    last = offset
        for envelope, offset, prev in self._recovering.pop(address, []):
            if offset > last:
                deliver(envelope, offset, prev)
                last = offset

    def _on_spread(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        """A hub's or user's delivery from another node (ours went out at once)."""
        if envelope.origin != self.node:
            delivery = envelope.to_delivery()
            if delivery is not None:
                self._gw.fanout.deliver_local(delivery)

    def _on_user(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        """A user's delivery: from their inbox stream (an offset; every node, this
        one too), or from another node without an inbox."""
        if offset == 0:
            self._on_spread(envelope, offset, prev)
            return
        user = envelope.target
        inbox = self._gw.inbox
        ready = inbox is not None and UserId(user) in self._gw.pool.users
        stream = stream_of(user)
        top = inbox.top(stream) if inbox is not None and ready else 0
        self._on_stream(stream, envelope, offset, prev, ready, top, self._deliver_inbox)

    def _deliver_inbox(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        delivery = envelope.to_delivery()
        if delivery is not None:
            self._gw.fanout.deliver_inbox(delivery, offset, prev)

    def _on_connection(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        if envelope.type == RAW_TYPE:
            conn = self._gw.pool.connections.get(ConnectionId(envelope.target))
            if conn is not None:
                conn.sink.send(envelope.payload)
            return
        delivery = envelope.to_delivery()
        if delivery is not None:
            self._gw.fanout.deliver_local(delivery)

    def _on_control(self, envelope: env.Envelope, offset: int, prev: int) -> None:
        try:
            op = msgspec.json.decode(envelope.extra, type=_Control)
        except msgspec.DecodeError:
            log.warning("dropped a malformed control message")
            return
        if op.op == "refused":  # our API asked for this join; the connection's node refused it
            self.joins_refused += 1
            log.warning("join of %s to %s refused on node %s: %s",
                        envelope.target, op.channel, envelope.origin, op.reason)
            return
        gw = self._gw
        if envelope.target.startswith("user:"):
            if envelope.origin == self.node:
                return
            tabs = gw.pool.users.get(UserId(envelope.target[5:]), {})
            for tab in list(tabs.values()):
                tab.sink.close(op.code, op.reason)
            return
        conn = gw.pool.connections.get(ConnectionId(envelope.target))
        if conn is None:
            return
        if op.op == "disconnect":
            conn.sink.close(op.code, op.reason)
        elif op.op == "leave":
            if gw.leave(conn, ChannelAddress(op.channel)):
                conn.send_action("@@wsgate/LEFT", {"channel": op.channel})
        else:
            self._server_join(conn, op.channel, envelope.origin)

    def _server_join(self, conn: Connection, channel: str, asker: str) -> None:
        """A join asked by another node's API: the same pipeline as a client's JOIN.

        A refusal is logged and counted in :attr:`joins_refused` here, and sent
        back to the ``asker`` node, which logs and counts it too (it already
        answered its caller ``202``).
        """
        from wsgate.core.gateway import JoinRefused
        from wsgate.protocol.address import parse_address

        address = parse_address(channel)
        if address is None:
            self._refused_join(conn, channel, asker, ErrorCode.BAD_REQUEST, "bad address")
            return

        def answer(result: Channel | JoinRefused) -> None:
            if isinstance(result, JoinRefused):
                self._refused_join(conn, channel, asker, result.code, result.message)
            else:
                conn.send_action("@@wsgate/JOINED", self._gw.joined_payload(result))

        self._gw.request_join(conn, address, answer, granted=True)  # the internal API asked

    def _refused_join(
        self, conn: Connection, channel: str, asker: str, code: ErrorCode, why: str
    ) -> None:
        self.joins_refused += 1
        log.warning("remote join of %s to %s refused: %s (%s)", conn.id, channel, code.value, why)
        if asker != self.node:
            op = _Control("refused", reason=f"{code.value}: {why}", channel=channel)
            self.control(env.CONTROL, conn.id, env.subject("node", asker), op)

    # Observer: interest and presence ----------------------------------------------

    def connected(self, conn: Connection) -> None:
        pool = self._gw.pool
        for hub_id in conn.hubs:
            hub = pool.hubs.get(hub_id)
            if hub is not None and len(hub.members) == 1:
                self._broker.subscribe(env.subject(env.HUB, hub_id))
        if not conn.principal.anonymous:
            tabs = pool.users.get(conn.user_id)
            if tabs is not None and len(tabs) == 1:
                self._broker.subscribe(env.subject(env.USER, conn.user_id))

    def disconnected(self, conn: Connection) -> None:
        self.spawn(self.limits.release(conn))
        pool = self._gw.pool
        for hub_id in conn.hubs:
            hub = pool.hubs.get(HubId(hub_id))
            if hub is None or not hub.members:
                self._broker.unsubscribe(env.subject(env.HUB, hub_id))
        if not conn.principal.anonymous and conn.user_id not in pool.users:
            self._broker.unsubscribe(env.subject(env.USER, conn.user_id))
        if self.inbox is not None:
            self.inbox.forget(conn)

    def joined(self, conn: Connection, address: ChannelAddress) -> None:
        channel = self._gw.pool.channel(address)
        if channel is not None and channel.remote is None:
            channel.remote = self.presence.replica(address)
        self.presence.local_joined(conn, address)

    def left(self, conn: Connection, address: ChannelAddress) -> None:
        self.presence.local_left(conn, address)
        if self._gw.pool.channel(address) is None:
            self._forget(address)

    def _forget(self, address: ChannelAddress) -> None:
        """No local member any more: stop receiving the channel."""
        self._ready.discard(address)
        self._recovering.pop(address, None)
        self.presence.forget(address)
        self._broker.unsubscribe(env.subject(env.CHANNEL, address))

    # Gate ------------------------------------------------------------------------

    def check(
        self, conn: Connection, address: Address, resume: Resume
    ) -> ErrorCode | Pending | None:
        """Let a JOIN complete once this node is ready for the channel."""
        channel = address.value
        if channel in self._ready:
            return None
        waiting = self._preparing.get(channel)
        if waiting is not None:
            waiting.append(resume)
        else:
            self._preparing[channel] = [resume]
            self.spawn(self._prepare(channel))
        return Pending.PENDING

    async def _prepare(self, address: ChannelAddress) -> None:
        refusal: ErrorCode | None = None
        try:
            self._broker.subscribe(env.subject(env.CHANNEL, address))
            # flush() waits for a broker that is away to come back: bound the JOIN.
            await asyncio.wait_for(self._broker.flush(), PREPARE_TIMEOUT_S)
            window = await self._backend.history.window(address)
            frames = [
                (offset, self._frame(address, data, offset)) for offset, data in window.entries
            ]
            self._gw.history.load(address, window.base, [f for f in frames if f[1]])
            await self.presence.load(address)
            self._ready.add(address)
        except Exception:
            log.exception("could not prepare %s", address)
            refusal = ErrorCode.UPSTREAM_UNAVAILABLE
        for resume in self._preparing.pop(address, []):
            resume(refusal)
        if self._gw.pool.channel(address) is None:
            self._forget(address)  # every waiting join failed or went away
