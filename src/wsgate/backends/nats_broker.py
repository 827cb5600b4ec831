"""The NATS :class:`~wsgate.backends.base.Broker`: core pub/sub plus JetStream history.

Work is queued in *lanes*, one per logical subject (plus one for
subscriptions), each drained in order by a task of its own that exists only
while the lane has work. So one subject's messages leave in the order they
were published (FIFO per publisher and subject), while a slow JetStream
round trip on one channel does not hold up another channel.

``publish_stream`` appends to the history stream with a compare-and-set on
the subject's last sequence (header ``Nats-Expected-Last-Subject-Sequence``),
so the ``prev`` it stores and sends is exact even with many publishers: the
loser of a race learns the real last sequence from the error and retries
after a short random pause (at most :data:`APPEND_TRIES` times, then the
message is dropped and counted in ``lost``). Only then does it publish the
message on core NATS with the headers ``Wsgate-Offset`` and ``Wsgate-Prev``.

Throughput: each ``publish_stream`` waits for one JetStream ack (one round
trip plus a file-store write), and the lane of its subject waits with it, so
one channel sustains roughly ``1 / ack latency`` stream messages per second
(a few thousand on a LAN); different channels proceed in parallel. Plain
``publish`` costs no round trip.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wsgate.backends.base import Delivery
from wsgate.backends.nats_jet import Jet, WrongLastSequence
from wsgate.backends.nats_names import HDR_OFFSET, HDR_PREV

__all__ = ["APPEND_TRIES", "MAX_PENDING", "NatsBroker"]

log = logging.getLogger(__name__)

APPEND_TRIES = 32
"""Compare-and-set attempts of one ``publish_stream`` before the message is dropped."""
MAX_PENDING = 100_000
"""Publishes queued and not yet sent; beyond it ``publish`` drops (counted in ``dropped``)."""
_LAST_CACHE = 100_000
"""Streams whose last sequence is remembered; the cache is cleared when it fills (a
forgotten entry costs one extra round trip on the next append)."""

_PUB, _STREAM, _SUB, _BARRIER = range(4)
_CONTROL = ""
"""Lane of subscription changes (no logical subject is empty)."""

Op = tuple[Any, ...]


class NatsBroker:
    """:class:`~wsgate.backends.base.Broker` over one NATS connection.

    Guarantees beyond the Protocol's:

    - a message is sent only while connected: one published during an outage
      is dropped at once and counted in :attr:`lost` (at most once);
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
        self._last: dict[str, int] = {}
        """Per stream: the last sequence this node knows of (the next append's ``prev``)."""
        self._received: dict[str, int] = {}
        self._closed = False
        self.dropped = 0
        """Messages dropped because :data:`MAX_PENDING` publishes were queued."""
        self.lost = 0
        """Messages not sent: disconnected, JetStream error, or too many lost races."""

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
        self._enqueue(subject, (_STREAM, stream, data), counted=True)

    def subscribe(self, subject: str) -> None:
        self._subjects.add(subject)
        self._enqueue(_CONTROL, (_SUB, subject), counted=False)

    def unsubscribe(self, subject: str) -> None:
        self._subjects.discard(subject)
        self._enqueue(_CONTROL, (_SUB, subject), counted=False)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the work queued before this call reached the server.

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
        await self._nc.flush(timeout=max(1, int(timeout)))

    @property
    def received(self) -> dict[str, int]:
        return self._received

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
            await self._nc.publish(self._names.subject(key), op[1])
        else:
            await self._append(key, op[1], op[2])

    async def _append(self, subject: str, stream: str, data: bytes) -> None:
        jet, names = self._jet, self._names
        hist = names.hist(stream)
        last = self._last.get(stream)
        if last is None:
            stored = await jet.last(names.hist_stream, hist)
            last = stored.seq if stored is not None else 0
        for attempt in range(APPEND_TRIES):
            if last == 0:  # the stream starts (or restarts after expiry): see effective_prev
                await jet.publish(names.hist_start, b"")
            try:
                seq = await jet.publish(
                    hist, data, expected_last=last, headers={HDR_PREV: str(last)}
                )
            except WrongLastSequence as err:
                if err.actual is not None:
                    last = err.actual
                else:
                    stored = await jet.last(names.hist_stream, hist)
                    last = stored.seq if stored is not None else 0
                # Another node appended first: back off a little, so that two
                # nodes writing one channel do not stay in lockstep.
                await asyncio.sleep(random.uniform(0, 0.001 * (attempt + 1)))
                continue
            if len(self._last) >= _LAST_CACHE:
                self._last.clear()
            self._last[stream] = seq
            prev = effective_prev(seq, last)
            headers = {HDR_OFFSET: str(seq), HDR_PREV: str(prev)}
            await self._nc.publish(names.subject(subject), data, headers=headers)
            return
        self.lost += 1
        log.warning("broker: gave up appending to %r after %d races", stream, APPEND_TRIES)

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
        async def on_message(msg: Msg) -> None:
            if self._deliver is None or subject not in self._subjects:
                return
            offset = prev = 0
            hdrs = msg.headers
            if hdrs:
                try:
                    offset = int(hdrs.get(HDR_OFFSET, 0))
                    prev = int(hdrs.get(HDR_PREV, 0))
                except ValueError:  # a foreign publisher's headers
                    offset = prev = 0
            self._received[subject] = self._received.get(subject, 0) + 1
            self._deliver(Delivery(subject, offset, prev, msg.data))

        return on_message


def effective_prev(seq: int, stored_prev: int) -> int:
    """The ``prev`` of a history message: the stored one, or ``seq - 1`` for a stream's first.

    A stream's first message (ever, or after its messages expired) has no
    predecessor. Like the memory backend, whose new stream starts above an
    offset base, it reports ``seq - 1``: a sequence below its own but above
    the one its appender used up on
    :attr:`~wsgate.backends.nats_names.Names.hist_start` just before, so never
    an offset of this stream. A node that last saw an offset of the stream's
    previous life therefore always detects the gap.
    """
    return stored_prev if stored_prev else seq - 1


_NAMES = {_PUB: "publish", _STREAM: "publish_stream", _SUB: "subscribe", _BARRIER: "flush"}
