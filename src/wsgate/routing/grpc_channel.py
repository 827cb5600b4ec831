"""gRPC calls over asyncio: the socket side of :mod:`wsgate.routing.grpc_h2` (issue 10).

A :class:`Channel` is one target's connection, made on the first call and
remade after it is lost or the server sent GOAWAY (calls above its last
stream id fail ``UNAVAILABLE``; the calls below it finish on the old
connection, closed once they have). It replaces grpcio's ``grpc.aio`` for
the calls (grpcio stays for reflection): a unary call costs a fraction of
grpcio's CPU (bench/grpc_clients.py; figures in bench/README.md).

- :meth:`Channel.unary`: one request message, one answer message; the
  deadline goes as ``grpc-timeout`` and is also kept locally: one timer per
  connection, armed for its earliest deadline and re-armed only when it
  fires (a channel's calls share one timeout, so deadlines grow in start
  order), as ``http1_conn`` does; a ``call_later`` and its ``cancel`` per call
  cost more than the rest of the call's client side (bench/README.md).
- :meth:`Channel.stream`: a :class:`ServerStream`, an async iterator of the
  answer messages with ``cancel()`` (RST_STREAM CANCEL). Its queue holds
  what the stream window let the server send ahead of the reader: bounded.
- A failed call raises :class:`GrpcCallError` with the ``grpc.StatusCode``
  name (``UNAVAILABLE`` for a refused connection, a lost one, GOAWAY, or a
  reconnect back-off; ``DEADLINE_EXCEEDED``; ``RESOURCE_EXHAUSTED`` for a
  message over ``max_message``, either way).
- Reconnecting backs off 0.2 s, doubling to 2 s: during a back-off, calls
  fail at once (as grpcio's do while its channel is in TRANSIENT_FAILURE).
- Calls beyond the server's ``MAX_CONCURRENT_STREAMS`` wait for a stream to
  end (their number is bounded by the caller's concurrency cap).
- TLS is asyncio's SSL with ALPN ``h2``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Final

from wsgate.routing.grpc_h2 import STATUS_NAMES, H2Client, Stream, request_prefix

__all__ = ["Channel", "GrpcCallError", "ServerStream", "UnaryCall"]

BACKOFF_S: Final = (0.2, 2.0)
"""First and longest wait before reconnecting after a failed connect."""


class GrpcCallError(Exception):
    """A call ended with a status other than OK: its ``grpc.StatusCode`` name and details."""

    def __init__(self, status: str, details: str) -> None:
        super().__init__(status, details)
        self.status = status
        self.details = details


def _error(status: int, details: str) -> GrpcCallError:
    name = STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else "UNKNOWN"
    return GrpcCallError(name, details)


class _Conn(asyncio.Protocol):
    """One socket and its :class:`H2Client`."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        """Kept: each ``get_running_loop()`` is a ``getpid()`` system call on CPython 3.11."""
        self.h2 = H2Client(max_message=channel.max_message)
        self.transport: asyncio.Transport | None = None
        self._flushing = False
        self.timer: asyncio.TimerHandle | None = None
        """Armed for ``timer_at``, the earliest deadline of the unary calls on this connection."""
        self.timer_at = 0.0

    def watch(self, call: UnaryCall, deadline: float) -> None:
        """Keep ``call``'s deadline (``loop.time()``): it ends ``DEADLINE_EXCEEDED`` then."""
        call.deadline = deadline
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        now = self.loop.time()
        due: list[tuple[Stream, UnaryCall]] = []
        first = float("inf")
        for stream in self.h2.streams.values():
            call = stream.listener
            if isinstance(call, UnaryCall):
                if call.deadline <= now:
                    due.append((stream, call))
                else:
                    first = min(first, call.deadline)
        for stream, call in due:
            self.channel._expire(self, stream, call)
        if first != float("inf") and self.timer is None:
            self._arm(first)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no subclass)
        self.h2.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.h2.receive(data)
        self.after()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.h2.lost()
        self.channel._dropped(self)

    def flush(self) -> None:
        """Write what the connection has for the socket now."""
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def flush_soon(self) -> None:
        """Write at the end of this loop iteration (one write for the calls started in it)."""
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flushing = False
        self.flush()

    def after(self) -> None:
        """After any change: write, let a waiting call in, close a drained connection."""
        self.flush()
        drained = self.h2.closed or (not self.h2.usable and not self.h2.streams)
        if drained and self.transport is not None:
            self.transport.close()
        self.channel._wake()


class UnaryCall:
    """A unary call's listener: keeps the one answer; :meth:`finish` hears the outcome once.

    Subclass and override :meth:`finish` (``answer`` is the message, or
    ``None`` with ``error`` set) to use :meth:`Channel.start_unary`.
    """

    __slots__ = ("answer", "deadline", "ended")

    def __init__(self) -> None:
        self.answer: bytes | None = None
        self.deadline = 0.0
        """When the call ends ``DEADLINE_EXCEEDED`` (``loop.time()``; its connection's timer)."""
        self.ended = False

    def message(self, data: bytes) -> None:
        if self.answer is None:
            self.answer = data

    def end(self, status: int, details: str) -> None:
        if self.ended:
            return
        self.ended = True
        if status == 0 and self.answer is not None:
            self.finish(self.answer, None)
        elif status == 0:
            self.finish(None, GrpcCallError("INTERNAL", "no answer message"))
        else:
            self.finish(None, _error(status, details))

    def finish(self, answer: bytes | None, error: GrpcCallError | None) -> None:
        raise NotImplementedError


class _Unary(UnaryCall):
    """:meth:`Channel.unary`'s listener: the outcome into a future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        super().__init__()
        self.future = future

    def finish(self, answer: bytes | None, error: GrpcCallError | None) -> None:
        if self.future.done():
            return
        if answer is not None:
            self.future.set_result(answer)
        else:
            self.future.set_exception(error or GrpcCallError("INTERNAL", "no outcome"))


class Channel:
    """Calls to one target (see the module docstring); made and used on one event loop."""

    def __init__(
        self, target: str, *, tls: bool = False, roots: bytes | None = None,
        max_message: int = 4 << 20,
    ) -> None:
        host, _, port = target.rpartition(":")
        self.target = target
        self._host = host.strip("[]")
        self._port = int(port)
        self._tls = tls
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl.create_default_context(
                cadata=roots.decode() if roots is not None else None
            )
            self._ssl.set_alpn_protocols(["h2"])
        self.max_message = max_message
        self._conn: _Conn | None = None
        self._old: set[_Conn] = set()
        """Connections after GOAWAY, until their last streams end (then closed)."""
        self._connecting: asyncio.Future[_Conn] | None = None
        self._dialing: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_S[0]
        self._waiters: deque[asyncio.Future[None]] = deque()
        """Calls waiting for the server's stream cap; bounded by the caller's concurrency cap."""
        self._prefixes: dict[str, bytes] = {}
        """Method path -> its header block's fixed part; bounded by the target's methods."""
        self._closed = False

    def prefix(self, path: str) -> bytes:
        block = self._prefixes.get(path)
        if block is None:
            if len(self._prefixes) >= 4096:
                self._prefixes.clear()
            block = self._prefixes[path] = request_prefix(path, self.target, self._tls)
        return block

    async def unary(self, path: str, request: bytes, metadata: bytes, timeout_s: float) -> bytes:
        """One call; ``metadata``: a header block (``grpc_h2.metadata_block``) with the deadline."""
        if len(request) > self.max_message:
            raise GrpcCallError("RESOURCE_EXHAUSTED", "request message over the size limit")
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None or not conn.h2.can_open():
            conn = await self._ready(loop.time() + timeout_s)
        future: asyncio.Future[bytes] = loop.create_future()
        call = _Unary(future)
        stream = conn.h2.open(self.prefix(path) + metadata, request, call)
        conn.flush_soon()
        conn.watch(call, loop.time() + timeout_s)
        try:
            return await future
        except asyncio.CancelledError:
            call.ended = True
            conn.h2.reset(stream)
            conn.after()
            raise

    def start_unary(
        self, path: str, request: bytes, metadata: bytes, timeout_s: float, call: UnaryCall
    ) -> bool:
        """Start a call now if the connection can take it (else ``False``: use :meth:`unary`).

        No task and no future: ``call`` hears the outcome from the socket's
        callbacks or the deadline's timer, never from within this method.
        """
        conn = self._conn
        if conn is None or len(request) > self.max_message:
            return False
        if conn.h2.start(self.prefix(path), metadata, request, call) is None:  # none can open
            return False
        conn.flush_soon()
        conn.watch(call, conn.loop.time() + timeout_s)
        return True

    def stream(self, path: str, request: bytes, metadata: bytes) -> ServerStream:
        """A server-streaming call, opened at its first ``__anext__``."""
        return ServerStream(self, path, request, metadata)

    async def aclose(self) -> None:
        """Close every connection (their calls end ``UNAVAILABLE``)."""
        self._closed = True
        for conn in [self._conn, *self._old]:
            if conn is not None:
                conn.h2.lost()  # the calls hear it now, not when the socket is gone
                if conn.transport is not None:
                    conn.transport.close()
        self._conn = None
        self._old.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # Internals -----------------------------------------------------------------

    def _expire(self, conn: _Conn, stream: Stream, call: UnaryCall) -> None:
        conn.h2.reset(stream)
        conn.after()
        call.end(4, "deadline exceeded (gateway)")

    async def _ready(self, deadline: float) -> _Conn:
        """An open connection that can take one more stream, by ``deadline``."""
        loop = asyncio.get_running_loop()
        for _ in range(1000):  # each turn waits for a connect or a stream's end
            if self._closed:
                raise GrpcCallError("UNAVAILABLE", "channel closed")
            conn = self._conn
            if conn is not None and not conn.h2.usable:
                self._retire(conn)
                conn = None
            if conn is None:
                conn = await self._connect(deadline)
            if conn.h2.can_open():
                return conn
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise GrpcCallError("DEADLINE_EXCEEDED", "waiting for a stream") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        raise GrpcCallError("UNAVAILABLE", "no stream")

    async def _connect(self, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            if time.monotonic() < self._retry_at:
                raise GrpcCallError("UNAVAILABLE", "reconnect back-off")
            self._connecting = loop.create_future()
            self._dialing = loop.create_task(self._dial(self._connecting, deadline))
        try:
            return await asyncio.shield(self._connecting)
        except OSError as exc:
            raise GrpcCallError("UNAVAILABLE", f"connect: {exc}") from None
        except TimeoutError:
            raise GrpcCallError("UNAVAILABLE", "connect timed out") from None

    async def _dial(self, result: asyncio.Future[_Conn], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(self), self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                ),
                max(0.05, deadline - loop.time()),
            )
        except (OSError, TimeoutError) as exc:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_S[1])
            self._connecting = None
            result.set_exception(exc)
            result.exception()  # retrieved: a connect nobody waits for any more is no warning
            return
        self._connecting = None
        self._backoff = BACKOFF_S[0]
        if self._closed:
            if proto.transport is not None:
                proto.transport.close()
            result.set_exception(OSError("channel closed"))
            result.exception()
            return
        self._conn = proto
        result.set_result(proto)

    def _retire(self, conn: _Conn) -> None:
        if self._conn is conn:
            self._conn = None
        if conn.h2.streams and conn.transport is not None:
            self._old.add(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def _dropped(self, conn: _Conn) -> None:
        if self._conn is conn:
            self._conn = None
        self._old.discard(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class ServerStream:
    """A server-streaming call: ``async for message in stream``; :meth:`cancel` ends it."""

    def __init__(self, channel: Channel, path: str, request: bytes, metadata: bytes) -> None:
        self._channel = channel
        self._path = path
        self._request = request
        self._metadata = metadata
        self._queue: deque[bytes] = deque()
        """Messages the reader has not taken: bounded by the stream window (see grpc_h2)."""
        self._end: tuple[int, str] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._conn: _Conn | None = None
        self._stream: Stream | None = None
        self._opened = False

    def __aiter__(self) -> ServerStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._opened:
            await self._open()
        for _ in range(1 << 30):  # each turn takes a message or waits for one
            if self._queue:
                data = self._queue.popleft()
                if not self._queue and self._stream is not None and self._conn is not None:
                    self._conn.h2.consumed(self._stream)
                    self._conn.after()
                return data
            if self._end is not None:
                status, details = self._end
                if status == 0:
                    raise StopAsyncIteration
                raise _error(status, details)
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        raise GrpcCallError("INTERNAL", "stream loop bound")

    def cancel(self) -> None:
        """Reset the stream (the server sees CANCELLED); the reader's next step ends it."""
        if self._end is None:
            self._end = (1, "cancelled")
        if self._conn is not None and self._stream is not None:
            self._conn.h2.reset(self._stream)
            self._conn.after()
        self._wake()

    async def _open(self) -> None:
        self._opened = True
        channel = self._channel
        if len(self._request) > channel.max_message:
            raise GrpcCallError("RESOURCE_EXHAUSTED", "request message over the size limit")
        conn = channel._conn
        if conn is None or not conn.h2.can_open():
            loop = asyncio.get_running_loop()
            conn = await channel._ready(loop.time() + 3600.0)
        if self._end is not None:  # cancelled while connecting
            return
        self._conn = conn
        block = channel.prefix(self._path) + self._metadata
        self._stream = conn.h2.open(block, self._request, self)
        conn.flush()

    # The Listener side.

    def message(self, data: bytes) -> None:
        self._queue.append(data)
        if self._stream is not None:
            self._stream.paused = True  # until the reader took everything queued
        self._wake()

    def end(self, status: int, details: str) -> None:
        if self._end is None:
            self._end = (status, details)
        self._wake()

    def _wake(self) -> None:
        waiter, self._wakeup = self._wakeup, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
