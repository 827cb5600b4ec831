"""The NATS :class:`~wsgate.backends.base.Broker`: core pub/sub, with JetStream history.

Work is queued in *lanes*, one per logical subject (plus one for
subscriptions), each drained in order by a task of its own that exists only
while the lane has work. So one subject's messages leave in the order they
were published (FIFO per publisher and subject).

``publish_stream(f"chan.{s}", s, data)`` appends ``data`` to the history
subject ``P.hist.<s>`` (a user's inbox: ``P.inbox.<s>`` in the inbox stream)
with a compare-and-set publish
(``Nats-Expected-Last-Subject-Sequence`` = the subject's last stream
sequence) carrying the channel's own counter in headers:
``Wsgate-Offset`` (the channel's last offset + 1) and ``Wsgate-Created``
(the channel's epoch). A channel with no stored message starts a new epoch,
``max(wall clock µs, last epoch this node saw) `` — so offsets are per
channel and contiguous (``prev = offset - 1``), and a channel freed and
re-created starts above its earlier offsets. The history stream stores it and
*republishes* it, headers included, to ``P.msg.chan.<s>``, the broker subject
every node subscribes to. A lost race (another node appended first) rereads
the subject's last message and tries again, at most :data:`APPEND_TRIES`
times. Each lane caches its channel's last ``(sequence, offset, epoch)`` from
its acks, so a lone writer reads nothing back; the append waits for its ack.
Stream publishes that queued up on a lane meanwhile (at most
:data:`MAX_BATCH`, :data:`MAX_BATCH_BYTES`) go out as *one* stored message
holding consecutive offsets (``Wsgate-Lengths`` splits it), so a busy
channel pays one round trip per batch, not per action.

The ack also orders what follows on the lane: the server queues a stored
message's republish before its ack, so once the ack arrived the message was
routed to the subscribers' connections, and a later plain publish on the
same subject cannot overtake it. It is also the flow control (one append in
flight per channel and node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wsgate.backends.base import Delivery
from wsgate.backends.nats_jet import Jet, Stored, WrongLastSequence, guard
from wsgate.backends.nats_names import (
    HDR_CREATED,
    HDR_LENGTHS,
    HDR_OFFSET,
    HDR_SEQUENCE,
    HDR_STREAM,
    STREAM_KIND,
)
from wsgate.exceptions import BackendUnavailable

__all__ = [
    "APPEND_TRIES",
    "MAX_BATCH",
    "MAX_BATCH_BYTES",
    "MAX_HEADS",
    "MAX_PENDING",
    "NatsBroker",
    "entries_of",
    "head_of",
]

log = logging.getLogger(__name__)

MAX_PENDING = 100_000
"""Publishes queued and not yet sent; beyond it ``publish`` drops (counted in ``dropped``)."""
APPEND_TRIES = 16
"""Compare-and-set attempts of one stream append before it is dropped (counted in ``lost``)."""
MAX_BATCH = 64
"""At most this many queued stream publishes of one channel go out as one stored message."""
MAX_BATCH_BYTES = 64 * 1024
"""…and at most this many bytes of data (a larger single action goes alone): the
default ``server.max_message_bytes``, so a stored batch is no larger than the
largest single action, and the stream's message limits still bound its bytes."""
MAX_HEADS = 10_000
"""Channels whose last ``(sequence, offset, epoch)`` a node caches; past it the least
recently appended is forgotten (and read back from the server when next appended)."""

_PUB, _STREAM, _SUB, _BARRIER = range(4)
_CONTROL = ""
"""Lane of subscription changes (no logical subject is empty)."""

Op = tuple[Any, ...]


class NatsBroker:
    """:class:`~wsgate.backends.base.Broker` over one NATS connection.

    Guarantees beyond the Protocol's:

    - a message is sent only while connected: one published during an outage
      is dropped at once and counted in :attr:`lost` (at most once);
    - a stream publish waits for its ack: one the server refuses, or that
      loses the compare-and-set :data:`APPEND_TRIES` times, is neither stored
      nor delivered, and counted in :attr:`lost`;
    - queued publishes are bounded by :data:`MAX_PENDING`; past it
      :meth:`publish` and :meth:`publish_stream` drop the message and count it
      in :attr:`dropped` (subscription changes are never dropped);
    - after a reconnect nats-py re-subscribes every subject by itself (counted in
      :attr:`reconnects`).
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
        self._heads: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        """Per stream: the last ``(sequence, offset, epoch)`` this node appended or read,
        least recently appended first; bounded by :data:`MAX_HEADS`."""
        self._epoch = 0
        """The last epoch this node started a channel at: a new one is above it."""
        self._received: dict[str, int] = {}
        self._closed = False
        self.dropped = 0
        """Messages dropped because :data:`MAX_PENDING` publishes were queued."""
        self.lost = 0
        """Messages not sent: disconnected, refused, or an append that lost every race."""

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

    @guard
    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the work queued before this call reached the server, and its
        stream publishes are stored (and republished: each waited for its ack).

        Raises :class:`~wsgate.exceptions.BackendUnavailable` while the
        connection is down, or after ``timeout`` seconds without an answer.
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
        if not self._nc.is_connected:
            # nats-py's flush returns at once while it reconnects: nothing was confirmed.
            raise BackendUnavailable("NatsBroker.flush: not connected to the server")
        await flush_connection(self._nc, timeout)

    @property
    def received(self) -> dict[str, int]:
        return self._received

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def reconnects(self) -> int:
        """Times nats-py re-established the lost connection (its own count)."""
        return int(self._nc.stats["reconnects"])

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
                n = _batch(lane) if op[0] == _STREAM else 1
                try:
                    await self._run(key, op, [lane[i] for i in range(n)])
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.lost += n
                    log.warning("broker: %s on %r failed", _NAMES[op[0]], key, exc_info=True)
                finally:
                    for _ in range(n):
                        lane.popleft()
                    if op[0] in (_PUB, _STREAM):
                        self._pending -= n
        finally:
            # No await between the last popleft and here: a publish in between
            # would have found the lane non-empty and been drained above.
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            for op in lane:  # cancelled: release whoever waits in flush()
                if op[0] == _BARRIER and not op[1].done():
                    op[1].cancel()

    async def _run(self, key: str, op: Op, ops: list[Op]) -> None:
        """Run ``op`` (the lane's head); ``ops`` is it and the stream publishes
        batched with it (just ``[op]`` for any other kind)."""
        kind = op[0]
        if kind == _BARRIER:
            if not op[1].done():
                op[1].set_result(None)
        elif kind == _SUB:
            await self._reconcile(op[1])
        elif not self._nc.is_connected:
            self.lost += len(ops)
        elif kind == _PUB:
            await self._nc.publish(self._names.subject(key), op[1])
        else:
            await self._append(op[1], [o[2] for o in ops])

    async def _append(self, stream: str, batch: list[bytes]) -> None:
        """Store ``batch`` at the channel's next offsets, as one message (see the module)."""
        jet = self._jet
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        stored_in, subject = self._names.stored(stream)
        head = self._heads.pop(stream, None)
        for _ in range(APPEND_TRIES):
            if head is None:
                head = head_of(await jet.last(stored_in, subject))
            seq, offset, epoch = head
            if seq == 0:  # nothing stored: a new epoch, above every one this node used
                epoch = offset = self._epoch = max(int(time.time() * 1e6), self._epoch + 1)
            headers = {HDR_OFFSET: str(offset + 1), HDR_CREATED: str(epoch)}
            if len(batch) > 1:
                headers[HDR_LENGTHS] = ",".join(str(len(d)) for d in batch)
            try:
                stored = await jet.publish(subject, data, expected_last=seq, headers=headers)
            except WrongLastSequence:
                head = None  # another node appended first (or the channel expired): reread
                continue
            self._heads[stream] = (stored, offset + len(batch), epoch)
            if len(self._heads) > MAX_HEADS:
                self._heads.popitem(last=False)
            return
        raise WrongLastSequence(None)

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
        ours = {self._names.hist_stream, self._names.inbox_stream}

        async def on_message(msg: Msg) -> None:
            if self._deliver is None or subject not in self._subjects:
                return
            hdrs = msg.headers
            entries = [(0, msg.data)]
            if hdrs and hdrs.get(HDR_STREAM) in ours:  # republished by our stream
                try:
                    entries = entries_of(hdrs, int(hdrs[HDR_SEQUENCE]), msg.data)
                except (KeyError, ValueError):
                    log.warning("broker: dropped a malformed history message on %s", subject)
                    return
            for offset, data in entries:  # offsets of one channel are contiguous
                if self._deliver is None:
                    return
                self._received[subject] = self._received.get(subject, 0) + 1
                self._deliver(Delivery(subject, offset, max(offset - 1, 0), data))

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


def _batch(lane: deque[Op]) -> int:
    """How many stream publishes at the head of ``lane`` go out as one message."""
    n, size = 0, 0
    for op in lane:
        if op[0] != _STREAM or n == MAX_BATCH:
            break
        size += len(op[2])
        if n and size > MAX_BATCH_BYTES:
            break
        n += 1
    return n


def entries_of(headers: Mapping[str, str], seq: int, data: bytes) -> list[tuple[int, bytes]]:
    """The ``(offset, data)`` actions one stored history message holds, oldest first.

    ``Wsgate-Offset`` is the first one's offset; ``Wsgate-Lengths`` (absent
    for one action) splits ``data``. A message stored without our headers (an
    older wsgate) is one action at offset ``seq``. Raises :exc:`ValueError`
    for malformed headers.
    """
    first = int(headers.get(HDR_OFFSET) or seq)
    lengths = headers.get(HDR_LENGTHS)
    if not lengths:
        return [(first, data)]
    out: list[tuple[int, bytes]] = []
    pos = 0
    for i, raw in enumerate(lengths.split(",")):
        n = int(raw)
        out.append((first + i, data[pos : pos + n]))
        pos += n
    if pos != len(data):
        raise ValueError("Wsgate-Lengths do not add up to the payload")
    return out


def head_of(last: Stored | None) -> tuple[int, int, int]:
    """``(sequence, last offset, epoch)`` of a channel's last stored message (zeros: none).

    A message stored without our headers (an older wsgate) counts as offset
    ``sequence`` of epoch 0, so the channel continues above it."""
    if last is None:
        return (0, 0, 0)
    try:
        offset = entries_of(last.headers, last.seq, last.data)[-1][0]
        epoch = int(last.headers.get(HDR_CREATED) or 0)
    except ValueError:
        offset, epoch = last.seq, 0
    return (last.seq, offset, epoch)


_NAMES = {_PUB: "publish", _STREAM: "publish_stream", _SUB: "subscribe", _BARRIER: "flush"}
