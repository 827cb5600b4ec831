"""Per-connection outbound buffers, flushed once per event-loop iteration.

Design §8: the kernel, not Python, is the cost of fan-out — one ``send`` per
message per connection. So frames are not written when they are sent; they
are appended to the connection's outbound buffer, and one callback per loop
iteration writes every connection that has something pending with *one*
transport write (many frames, one syscall).

Lifecycle of one connection's buffer::

    _enqueue(frame)   # first frame this iteration: a list of the frame, and
                      # the connection goes on the dirty list
    _enqueue(frame)   # later frames: appended to the list
    ...               # end of the iteration: Flusher._run() calls
    flush()           # one write (joined) or writelines(); list dropped

The list holds references, never copies: a fan-out frames an action once and
every member's list points at that one ``bytes`` object (a pointer per frame
per member). Appending frames to one growing ``bytearray`` instead copied each
frame, and again at every growth (``bytearray`` grows to the exact size when
the append is larger than an eighth of it): quadratic in the frames queued per
iteration, which a burst makes hundreds — the fan-out's largest cost before
(bench/README.md).

The flush joins up to :data:`JOIN_FRAMES` frames into one ``bytes`` (one linear
copy, which also sizes them: cheaper than a ``len()`` per frame) and writes that
with ``write()`` when it comes to at most :data:`JOIN_MAX` bytes and the
transport holds no backlog: the kernel copies one buffer instead of walking one
iovec per frame, and uvloop acquires one buffer instead of one per frame
(bench/README.md, "One write of joined frames"). Otherwise ``writelines`` hands
the frames themselves to the transport, which keeps references to the shared
frames, not a copy per member, for whatever the kernel did not take. The join
is transient: at most :data:`JOIN_FRAMES` frames copied, freed at once unless
written.

An idle connection holds no buffer at all (``_out is None``).

Bounds. The list is bounded in frames: past :data:`MAX_FRAMES` in one
iteration it is flushed at once (the frames keep their order; the connection
is simply written twice that iteration). It is bounded in bytes at each flush:
when the bytes pending plus those the transport has not yet handed to the
kernel pass ``high_water``, :meth:`_overflow` is called (the listener closes
the connection with 4000, slow consumer) and the buffer is dropped unwritten.
The bytes are counted at the flush, not per frame: adding each frame's length
to a running total cost ~60 ns per delivery, 6 % of a relayed delivery's CPU
(the list's count is what the hot path checks). A stalled reader therefore
costs bounded memory and never delays anyone else: nobody waits for its socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from picows import WSListener, WSTransport

from wsgate.transport.base import Sends
from wsgate.transport.batch import ChannelBatch, Member
from wsgate.typing import ConnectionId

__all__ = [
    "JOIN_FRAMES", "JOIN_MAX", "MAX_FRAMES", "BufferedListener", "Flusher", "OutboundContext",
]

_log: Final = logging.getLogger("wsgate.transport")

JOIN_MAX: Final = 64 * 1024
"""A flush of at most this many bytes to a transport with no backlog is written
as one joined buffer; a larger one goes by ``writelines`` (references)."""

JOIN_FRAMES: Final = 64
"""A flush of at most this many frames is sized by joining them (a transient copy
of at most this many frames); a longer one is sized frame by frame and never joined."""

MAX_FRAMES: Final = 1024
"""Frames a connection queues before they are flushed early, within the iteration."""


class Flusher:
    """The one writer of a listener (so of a loop): one ``call_soon`` per iteration.

    :meth:`mark` puts a connection on the dirty list and schedules
    :meth:`_run` if it is not scheduled yet; ``_run`` writes the open channel
    batch (:mod:`wsgate.transport.batch`), then flushes every dirty
    connection, once each, in the order they became dirty.

    :meth:`publish` is the fan-out's way into a channel: it holds the action
    in the one open :class:`~wsgate.transport.batch.ChannelBatch`, which
    anything else that reaches a connection first settles (:meth:`settle`).
    """

    __slots__ = ("_dirty", "_loop", "_scheduled", "batch", "batches_settled", "batches_written")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[BufferedListener] = []
        self._scheduled = False
        self.batch: ChannelBatch | None = None
        """The channel deliveries of this iteration not yet handed to anyone (at most one
        batch; written by :meth:`_run`, or early when full)."""
        self.batches_written = 0
        """Channel batches written whole (one shared write per member); only grows."""
        self.batches_settled = 0
        """Channel batches handed to their members' ``send`` because something else
        reached a connection first; only grows."""

    def mark(self, conn: BufferedListener) -> None:
        """Flush ``conn`` at the end of this loop iteration.

        Called by :meth:`BufferedListener._enqueue` only when its buffer goes
        from empty to non-empty, so a connection is listed once per iteration,
        plus once per early flush (:data:`MAX_FRAMES` frames each).
        """
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def publish(self, sends: Sends, data: bytes, exclude: ConnectionId | None) -> int:
        """Deliver ``data`` to the channel whose members are ``sends``, but ``exclude``.

        What the fan-out's loop over ``sends`` does, batched: returns the
        deliveries. Another channel's batch open is settled first.
        """
        batch = self.batch
        if batch is None or batch.key is not sends:
            batch = self._open(sends, dict(sends))
        self._hold(batch, data, exclude)
        return len(sends) - (exclude is not None and exclude in sends)

    def publish_hub(
        self, members: Mapping[ConnectionId, Member], data: bytes, exclude: ConnectionId | None
    ) -> int:
        """:meth:`publish` for a hub: its ``members`` are connections (their sinks get it)."""
        batch = self.batch
        if batch is None or batch.key is not members:
            batch = self._open(members, {cid: m.sink.send for cid, m in members.items()})
        self._hold(batch, data, exclude)
        return len(members) - (exclude is not None and exclude in members)

    def _open(self, key: object, members: Sends) -> ChannelBatch:
        if self.batch is not None:
            self.settle()
        batch = self.batch = ChannelBatch(key, members)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)
        return batch

    def _hold(self, batch: ChannelBatch, data: bytes, exclude: ConnectionId | None) -> None:
        if batch.add(data, exclude):  # full: written now, within the iteration
            self._write(batch)

    def _write(self, batch: ChannelBatch) -> None:
        """Close the open ``batch`` and give it to its members (one shared write each)."""
        self.batch = None
        self.batches_written += 1
        batch.write()

    def settle(self) -> None:
        """Hand the open batch's actions to its members' ``send`` now (order is kept)."""
        batch = self.batch
        if batch is not None:
            self.batch = None
            self.batches_settled += 1
            batch.settle()

    def _run(self) -> None:
        self._scheduled = False
        batch = self.batch
        if batch is not None:
            try:
                self._write(batch)
            except Exception:  # a bug must not keep the connections unflushed
                _log.exception("channel batch write failed")
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # a bug must not keep the other connections unflushed
                _log.exception("outbound flush failed")


class OutboundContext:
    """What a listener's connections share for the outbound path."""

    __slots__ = ("flusher", "high_water", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, high_water: int) -> None:
        self.loop = loop
        self.flusher = Flusher(loop)
        self.high_water = high_water
        """Pending + transport-buffered bytes past which a connection is closed 4000."""


class BufferedListener(WSListener):
    """A picows listener with a coalescing outbound buffer.

    Subclasses set ``_wst`` in ``on_ws_connected`` before the first
    :meth:`_enqueue`, and implement :meth:`_overflow`.
    """

    __slots__ = ("_backlog", "_ctx", "_out", "_paused", "_waiters", "_wst")

    _ctx: OutboundContext
    _wst: WSTransport

    def __init__(self, ctx: OutboundContext) -> None:
        self._ctx = ctx
        self._out: list[bytes] | None = None
        """Frames not yet written, in order (references, never copies): ``None``
        when idle. At most :data:`MAX_FRAMES` (flushed early past it), and in
        bytes ``high_water`` (:meth:`_overflow` at the flush past it); freed by
        the flush at the end of the iteration, or dropped by a close."""
        self._backlog = 0
        """The transport's write buffer size as last seen (after our last
        write, or on pause/resume); stale by at most the asyncio low-water
        mark, since a drain below it calls :meth:`resume_writing`."""
        self._paused = False
        """Between the transport's ``pause_writing`` and ``resume_writing``."""
        self._waiters: list[asyncio.Future[None]] | None = None
        """Producers waiting in :meth:`when_writable`: one per open stream, plus at
        most 8 left by streams cancelled while waiting (pruned on append)."""

    def when_writable(self) -> asyncio.Future[None] | None:
        """``None`` if a producer that can wait (a stream) may send now, else a future.

        Writable means nothing queued for this iteration's flush and the
        transport not paused. The future resolves at the next flush that
        leaves the transport unpaused, at ``resume_writing``, or when the
        connection goes (:meth:`release_waiters`); so a stream adds at most
        one message past the transport's own high mark, far below ``high_water``.
        """
        if self._out is None and not self._paused:
            return None
        fut: asyncio.Future[None] = self._ctx.loop.create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = [fut]
        else:
            if len(waiters) >= 8:  # drop those of cancelled streams: live ones bound the list
                waiters[:] = [w for w in waiters if not w.done()]
            waiters.append(fut)
        return fut

    def congested(self) -> bool:
        """Whether the transport is paused: the peer reads slower than we write.

        Between asyncio's ``pause_writing`` and ``resume_writing`` (its buffer
        past its high mark, far below ``high_water``). Creates nothing; a
        conflated channel skips such a member (:mod:`wsgate.core.conflation`).
        """
        return self._paused

    def release_waiters(self) -> None:
        """Resolve every :meth:`when_writable` future (writable again, or closed)."""
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    @property
    def queued_bytes(self) -> int:
        """Bytes queued for this iteration's flush (not yet given to the transport).

        Settles an open channel batch first (its actions then count as queued)."""
        self._ctx.flusher.settle()
        out = self._out
        return 0 if out is None else sum(map(len, out))

    def _enqueue(self, frame: bytes) -> None:
        """Append one encoded frame; it goes out with this iteration's flush."""
        flusher = self._ctx.flusher
        if flusher.batch is not None:
            flusher.settle()  # the channel's frames sent before this one go first
        out = self._out
        if out is None:
            self._out = [frame]
            self._ctx.flusher.mark(self)
        else:
            out.append(frame)
            if len(out) > MAX_FRAMES:
                self.flush()

    def flush(self) -> None:
        """Write everything pending with one transport call, or close 4000 past ``high_water``.

        Called by the :class:`Flusher` once per iteration, by :meth:`_enqueue`
        past :data:`MAX_FRAMES`, and by the listener before it sends a close
        frame (RFC 6455 §5.5.1: data queued before the close goes out before
        it). A no-op when nothing is pending. One ``write`` of the joined frames
        when they fit :data:`JOIN_MAX` and the transport has no backlog, else one
        ``writelines`` of the frames themselves.
        """
        out = self._out
        if out is None:
            return
        self._out = None
        tr = self._wst.underlying_transport
        if tr.is_closing():
            return
        backlog = self._backlog
        high_water = self._ctx.high_water
        n = len(out)
        if n == 1:
            data = out[0]
            size = len(data)
        elif n <= JOIN_FRAMES:
            data = b"".join(out)  # sized by joining: a len() per frame costs more than the copy
            size = len(data)
        else:  # a long burst: sized frame by frame, handed over uncopied
            data = None
            size = sum(map(len, out))
        if size + backlog > high_water:
            self._overflow()
            return
        if data is not None and (n == 1 or (backlog == 0 and size <= JOIN_MAX)):
            tr.write(data)
        else:
            tr.writelines(out)
        self._written(tr)

    def _write_shared(self, data: bytes, size: int) -> None:
        """Write ``data`` (a channel batch's joined frames, shared by its members) now.

        Only while nothing of this connection's own is pending (``_out`` is
        ``None``): the same bound as :meth:`flush`.
        """
        tr = self._wst.underlying_transport
        if tr.is_closing():
            return
        if size + self._backlog > self._ctx.high_water:
            self._overflow()
            return
        tr.write(data)  # a backlogged transport keeps a reference: the bytes are shared
        self._written(tr)

    def _written(self, tr: asyncio.WriteTransport) -> None:
        """After a write: note the transport's backlog; past ``high_water``, close 4000."""
        backlog = tr.get_write_buffer_size()
        self._backlog = backlog
        if backlog > self._ctx.high_water:
            self._overflow()
        elif self._waiters is not None and not self._paused:
            self.release_waiters()

    def pause_writing(self) -> None:
        """The transport's buffer passed asyncio's high mark: note its size."""
        self._paused = True
        self._backlog = self._wst.underlying_transport.get_write_buffer_size()

    def resume_writing(self) -> None:
        """The transport's buffer drained below asyncio's low mark."""
        self._paused = False
        self._backlog = self._wst.underlying_transport.get_write_buffer_size()
        if self._waiters is not None and self._out is None:
            self.release_waiters()

    def _overflow(self) -> None:
        """Pending data passed the high-water mark; the buffer is already dropped."""
        raise NotImplementedError
