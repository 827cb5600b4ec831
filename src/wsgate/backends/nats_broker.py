"""The NATS :class:`~wsgate.backends.base.Broker`: core pub/sub, with JetStream history.

Work is queued in *lanes*, one per logical subject (plus one for
subscriptions), each drained in order by a task of its own that exists only
while the lane has work. So one subject's messages leave in the order they
were published (FIFO per publisher and subject).

``publish_stream(f"chan.{s}", s, data)`` is one core publish of ``data`` to
the history subject ``P.hist.<s>``: the history stream stores it (its
sequence is the offset) and *republishes* it (stream config ``republish``)
to ``P.msg.chan.<s>``, the broker subject every node subscribes to, with the
headers ``Nats-Sequence`` (the offset) and ``Nats-Last-Sequence`` (the
subject's last sequence when it was stored: ``prev``). So an action costs one
inbound message and one delivery per subscribed node, the server assigns
offsets and ``prev`` atomically whatever the number of publishers, and the
publisher waits for nothing (no ack is asked for: a burst leaves in as few
writes as nats-py coalesces).

FIFO between a stream publish and a later *plain* publish on the same
subject needs one round trip: the stream message reaches subscribers through
the stream (stored, then republished), the plain one directly, so the plain
one could overtake it. Before such a plain publish the lane sends an empty
JetStream publish to :attr:`~wsgate.backends.nats_names.Names.hist_sync`
and awaits its ack: the stream stores one connection's messages in order,
and queues each one's republish before its ack on the one queue it sends
from (nats-server ``processJetStreamMsg``), so once that ack arrived every
earlier stream message was routed to the subscribers' connections. Only
lanes that mix the two pay it, once per switch; concurrent lanes share one
sync. The same sync, every :data:`SYNC_EVERY` stream publishes, is the flow
control: the server drops without a word what arrives while the stream's
ingest queue is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wsgate.backends.base import Delivery
from wsgate.backends.nats_jet import Jet
from wsgate.backends.nats_names import HDR_LAST_SEQUENCE, HDR_SEQUENCE, HDR_STREAM, STREAM_KIND

__all__ = ["MAX_PENDING", "SYNC_EVERY", "NatsBroker", "effective_prev"]

log = logging.getLogger(__name__)

MAX_PENDING = 100_000
"""Publishes queued and not yet sent; beyond it ``publish`` drops (counted in ``dropped``)."""
SYNC_EVERY = 1000
"""At most this many stream publishes of one node are unconfirmed: the next one first
waits for a sync. The server drops, silently, what arrives while a stream's ingest
queue holds 10 000 messages; this keeps one node well below that, for 2 broker
messages per 1000 actions."""
_UNSYNCED_MAX = 100_000
"""Subjects remembered as "a stream publish may still be on its way through the stream";
past it those already synced are forgotten, and if that is not enough the lane syncs."""

_PUB, _STREAM, _SUB, _BARRIER = range(4)
_CONTROL = ""
"""Lane of subscription changes (no logical subject is empty)."""

Op = tuple[Any, ...]


class NatsBroker:
    """:class:`~wsgate.backends.base.Broker` over one NATS connection.

    Guarantees beyond the Protocol's:

    - a message is sent only while connected: one published during an outage
      is dropped at once and counted in :attr:`lost` (at most once);
    - a stream publish is not acked: one the server fails to store (stream
      deleted, storage full, connection lost with it in the socket buffer) is
      neither stored nor delivered, and not counted;
    - queued publishes are bounded by :data:`MAX_PENDING`; past it
      :meth:`publish` and :meth:`publish_stream` drop the message and count it
      in :attr:`dropped` (subscription changes are never dropped);
    - after a reconnect nats-py re-subscribes every subject by itself.
    """

    def __init__(self, jet: Jet) -> None:
        self._jet = jet
        self._nc = jet.nc
        self._names = jet.names
        self._deliver: Callable[[Delivery], None] | None = None
        self._subjects: set[str] = set()
        """Subjects this node wants (updated at once; the lane catches up)."""
        self._subs: dict[str, Subscription] = {}
        """Subjects subscribed on the server."""
        self._lanes: dict[str, deque[Op]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._appended = 0
        """Stream publishes sent so far (numbers them for :meth:`_sync`)."""
        self._synced = 0
        """Every stream publish up to this number has been republished by the server."""
        self._unsynced: dict[str, int] = {}
        """Per subject: the number of its last stream publish, while maybe not yet synced."""
        self._sync_task: asyncio.Future[int] | None = None
        self._received: dict[str, int] = {}
        self._closed = False
        self.dropped = 0
        """Messages dropped because :data:`MAX_PENDING` publishes were queued."""
        self.lost = 0
        """Messages not sent: disconnected, or a failed sync before a plain publish."""

    async def start(self, deliver: Callable[[Delivery], None]) -> None:
        """Hand deliveries to ``deliver`` (the connection is opened by :func:`open_nats`)."""
        self._deliver = deliver

    async def close(self) -> None:
        """Stop the lanes (queued work is abandoned) and unsubscribe everything."""
        self._closed = True
        self._deliver = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._lanes.clear()
        for sub in self._subs.values():
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may already be closed
                log.debug("unsubscribe failed on close", exc_info=True)
        self._subs.clear()

    # Queueing ----------------------------------------------------------------

    def publish(self, subject: str, data: bytes) -> None:
        self._enqueue(subject, (_PUB, data), counted=True)

    def publish_stream(self, subject: str, stream: str, data: bytes) -> None:
        """Append to ``stream``; the server republishes to ``chan.<stream>`` only.

        Raises :exc:`ValueError` (at once) for any other ``subject``.
        """
        if subject != self._names.stream_subject(stream):
            raise ValueError(
                f"NATS publishes stream {stream!r} on {STREAM_KIND}.{stream}, not {subject!r}"
            )
        self._enqueue(subject, (_STREAM, stream, data), counted=True)

    def subscribe(self, subject: str) -> None:
        self._subjects.add(subject)
        self._enqueue(_CONTROL, (_SUB, subject), counted=False)

    def unsubscribe(self, subject: str) -> None:
        self._subjects.discard(subject)
        self._enqueue(_CONTROL, (_SUB, subject), counted=False)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the work queued before this call reached the server, and its
        stream publishes are stored (and republished): one sync, if there were any.

        Raises :exc:`TimeoutError` after ``timeout`` seconds (e.g. during an outage).
        """
        loop = asyncio.get_running_loop()
        barriers: list[asyncio.Future[None]] = []
        for lane in self._lanes.values():
            fut: asyncio.Future[None] = loop.create_future()
            lane.append((_BARRIER, fut))
            barriers.append(fut)
        async with asyncio.timeout(timeout):
            if barriers:
                await asyncio.gather(*barriers)
            if self._appended > self._synced and self._nc.is_connected:
                await self._sync()
        await flush_connection(self._nc, timeout)

    @property
    def received(self) -> dict[str, int]:
        return self._received

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    def _enqueue(self, key: str, op: Op, *, counted: bool) -> None:
        if self._closed:
            return
        if counted:
            if self._pending >= MAX_PENDING:
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    log.warning("broker queue full: %d messages dropped", self.dropped)
                return
            self._pending += 1
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
            task = asyncio.get_running_loop().create_task(self._drain(key, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        lane.append(op)

    async def _drain(self, key: str, lane: deque[Op]) -> None:
        try:
            while lane:
                op = lane[0]
                try:
                    await self._run(key, op)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.lost += 1
                    log.warning("broker: %s on %r failed", _NAMES[op[0]], key, exc_info=True)
                finally:
                    lane.popleft()
                    if op[0] in (_PUB, _STREAM):
                        self._pending -= 1
        finally:
            # No await between the last popleft and here: a publish in between
            # would have found the lane non-empty and been drained above.
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            for op in lane:  # cancelled: release whoever waits in flush()
                if op[0] == _BARRIER and not op[1].done():
                    op[1].cancel()

    async def _run(self, key: str, op: Op) -> None:
        kind = op[0]
        if kind == _BARRIER:
            if not op[1].done():
                op[1].set_result(None)
        elif kind == _SUB:
            await self._reconcile(op[1])
        elif not self._nc.is_connected:
            self.lost += 1
        elif kind == _PUB:
            if self._unsynced.get(key, 0) > self._synced:
                await self._sync()
            await self._nc.publish(self._names.subject(key), op[1])
        else:
            if self._appended - self._synced >= SYNC_EVERY:
                await self._sync()  # flow control (see SYNC_EVERY)
            await self._jet.append(self._names.hist(op[1]), op[2])
            self._appended += 1
            self._unsynced[key] = self._appended
            if len(self._unsynced) >= _UNSYNCED_MAX:
                self._prune()
                if len(self._unsynced) >= _UNSYNCED_MAX:  # still full: sync them all
                    await self._sync()
                    self._prune()

    def _prune(self) -> None:
        self._unsynced = {k: n for k, n in self._unsynced.items() if n > self._synced}

    async def _sync(self) -> None:
        """Wait until the server has stored and republished every stream publish sent so far.

        One acked JetStream publish on ``hist_sync``; lanes that need it while
        one is in flight that covers them share it. Raises when the ack does
        not come (the plain publish waiting on it is then dropped, counted in
        ``lost``, rather than sent out of order).
        """
        need = self._appended
        while self._synced < need:
            task = self._sync_task
            if task is None or task.done():
                task = self._sync_task = asyncio.ensure_future(self._sync_once())
            # A sync already in flight may have been sent before our stream
            # publish: then it does not cover it, and the loop sends another.
            covered = await asyncio.shield(task)
            self._synced = max(self._synced, covered)

    async def _sync_once(self) -> int:
        covered = self._appended
        await self._jet.publish(self._names.hist_sync, b"")
        return covered

    async def _reconcile(self, subject: str) -> None:
        want = subject in self._subjects
        sub = self._subs.get(subject)
        if want and sub is None:
            self._subs[subject] = await self._nc.subscribe(
                self._names.subject(subject), cb=self._callback(subject)
            )
        elif not want and sub is not None:
            del self._subs[subject]
            await sub.unsubscribe()

    def _callback(self, subject: str) -> Callable[[Msg], Any]:
        hist_stream = self._names.hist_stream

        async def on_message(msg: Msg) -> None:
            if self._deliver is None or subject not in self._subjects:
                return
            offset = prev = 0
            hdrs = msg.headers
            if hdrs and hdrs.get(HDR_STREAM) == hist_stream:  # republished by our stream
                try:
                    offset = int(hdrs[HDR_SEQUENCE])
                    prev = effective_prev(offset, int(hdrs.get(HDR_LAST_SEQUENCE, 0)))
                except (KeyError, ValueError):
                    offset = prev = 0
            self._received[subject] = self._received.get(subject, 0) + 1
            self._deliver(Delivery(subject, offset, prev, msg.data))

        return on_message


async def flush_connection(nc: NATS, timeout: float) -> None:
    """Wait until the server has processed everything written on ``nc`` so far.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of the
    commands (SUB, PUB) still queued for its flusher task, so the PONG can come
    back before the server saw them (a subscription "flushed" but not live yet:
    the conformance test caught it about once in six runs). Hand the queue to
    the socket first; then the PING follows it.
    """
    await nc._flush_pending(force_flush=True)  # returns once the flusher wrote the queue
    await nc.flush(timeout=max(1, int(timeout)))


def effective_prev(seq: int, last_seq: int) -> int:
    """The ``prev`` of a history message: the subject's last sequence when it was stored
    (``Nats-Last-Sequence``), or ``seq - 1`` for a stream's first (ever, or after the
    server removed every earlier message of it).

    Like the memory backend, whose new stream starts above an offset base, a
    first message reports ``seq - 1``: below its own offset and at or above
    every offset the stream had before, so a node that last saw an offset of
    an earlier incarnation detects the gap unless that offset is ``seq - 1``
    itself — in which case nothing of the stream was published in between,
    and the chain it sees is true. Whether an offset of an earlier
    incarnation can be *recovered* is decided by
    :class:`~wsgate.backends.nats_stores.NatsHistory` from timestamps, not
    from this value.
    """
    return last_seq if last_seq else seq - 1


_NAMES = {_PUB: "publish", _STREAM: "publish_stream", _SUB: "subscribe", _BARRIER: "flush"}
