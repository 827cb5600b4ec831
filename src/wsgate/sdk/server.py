"""The SDK's built-in HTTP/1.1 server: httptools (llhttp) parsing, one :class:`Responder`.

:class:`HttpServer` serves ``service.route`` / ``service.dispatch`` (the same
path as the ASGI app) straight from an ``asyncio.Protocol``, with no ASGI or
framework layer between the socket and the handler: ``dispatch`` runs in the
parser's ``on_message_complete``, and a handler that answers at once (a plain
``def``, or an ``async def`` that never awaits) costs no task. Guarantees:

- **keep-alive** (HTTP/1.1 by default, HTTP/1.0 with ``Connection:
  keep-alive``) and **pipelining**: the requests of one connection run
  concurrently and their answers are written in the order they were asked;
  the answers of requests read together are written together: those made in
  the parser once the read is parsed (one write, ``writelines``), those of
  tasks in the loop iteration after they are ready (a lone request's at once);
- **bounds**: a head (request line and headers) over ``max_header_bytes``
  is answered ``431`` and the connection closed (reads are fed to the parser
  in slices of that size, so an unfinished header line held inside httptools
  stays under twice the bound); a ``Content-Length`` or a (chunked) body
  over the service's ``max_body_bytes`` ``413`` and closed (by
  ``Content-Length``: before a byte of the body is read); more than
  ``max_pipeline`` unanswered requests pause reading until answers drain (a
  read already received is parsed whole: the excess is bounded by one read,
  at most 256 KiB); a client not reading its answers pauses reading (the
  transport's write buffer high-water mark bounds what is queued for it); at
  most ``max_connections`` connections (more are answered ``503`` and
  closed);
- **timeouts**, checked by one sweep task per server every ``tick_s``: a
  connection idle between requests for ``idle_timeout_s`` is closed; a
  request not received whole within ``request_timeout_s`` of its first byte
  gets ``408`` and is closed; a client whose answers stay unread (writing
  paused) for that long is aborted;
- **graceful close**: :meth:`HttpServer.aclose` stops listening, closes idle
  connections, lets requests in flight be answered (then closes) and aborts
  what is left after ``grace_s``.

Not supported: ``Expect: 100-continue`` (the gateway never sends it),
upgrades (``400``), TLS (put a proxy in front).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, Protocol, cast

import httptools

from wsgate.routing.signature import HEADER

__all__ = ["Answer", "HttpServer", "Responder", "ServerLimits", "run"]

log = logging.getLogger(__name__)

_SIGNATURE: Final = HEADER.lower().encode()
_SIGNATURE_LEN: Final = len(_SIGNATURE)
_REASONS: Final = {s.value: s.phrase.encode() for s in HTTPStatus}


Answer = tuple[int, bytes]
"""An HTTP status and its JSON body (``b""``: no body)."""


class Responder(Protocol):
    """What the server serves: :class:`wsgate.sdk.Service` is one."""

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read; a larger one is answered ``413``."""

    def route(self, method: bytes, path: bytes) -> Answer | None:
        """``None`` to read the body and :meth:`respond`; else the answer, body unread."""

    def dispatch(self, signature: str | None, body: bytes) -> Answer | Awaitable[Answer]:
        """The answer to a request for this path, or an awaitable of it (never raises)."""


@dataclass(frozen=True)
class ServerLimits:
    """The bounds and timeouts of :class:`HttpServer` (see the module docstring)."""

    max_header_bytes: int = 16384
    """Request line and headers; more: ``431``."""
    max_pipeline: int = 64
    """Unanswered requests per connection before reading pauses."""
    max_connections: int = 4096
    """Open connections; more: ``503``."""
    idle_timeout_s: float = 75.0
    """A connection with nothing asked is closed after this long."""
    request_timeout_s: float = 10.0
    """A request must arrive whole (and answers be read) within this long."""
    grace_s: float = 5.0
    """``aclose`` waits this long for answers in flight."""
    tick_s: float = 0.5
    """The timeout sweep's period (timeouts are this late at most)."""
    backlog: int = 1024
    """The listening socket's backlog."""


_HEADS: dict[int, bytes] = {}
"""Prebuilt answer heads up to ``Content-Length: ``, by ``status << 2 | has body << 1 |
close``; bounded by :data:`_HEADS_MAX` (the statuses a service answers are a handful)."""
_HEADS_MAX: Final = 256


def _head(key: int) -> bytes:
    status = key >> 2
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    if key & 2:
        head += b"Content-Type: application/json\r\n"
    if key & 1:
        head += b"Connection: close\r\n"
    head += b"Content-Length: "
    if len(_HEADS) < _HEADS_MAX:
        _HEADS[key] = head
    return head


def render(answer: Answer, close: bool) -> bytes:
    """The bytes of an HTTP/1.1 answer with ``Content-Length`` (and ``Connection: close``)."""
    status, body = answer
    key = status << 2 | (2 if body else 0) | close
    head = _HEADS.get(key) or _head(key)
    return b"%s%d\r\n\r\n%s" % (head, len(body), body)


class _Fatal(Exception):
    """Raised from a parser callback: answer ``status`` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Stop(Exception):
    """Raised from a parser callback: read no more (the connection is closing)."""


class _Slot:
    """One request's place in the answer order: its task until ``data`` is set."""

    __slots__ = ("data", "task")

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data
        self.task: asyncio.Task[None] | None = None


class _Conn(asyncio.Protocol):
    """One client connection: parser callbacks, the answer queue, the deadline."""

    __slots__ = (
        "body_size", "chunks", "closing", "deadline", "flush_soon", "head_raw", "head_size",
        "in_head", "in_message", "limits", "loop", "max_body", "max_head", "parser", "pending",
        "read_paused", "read_size", "ready", "reject", "server", "service", "signature", "time",
        "transport", "url", "write_paused",
    )  # fmt: skip

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.service = server.service
        self.limits = server.limits
        self.max_head = server.limits.max_header_bytes
        self.max_body = server.service.max_body_bytes
        self.loop = server.loop
        self.time = server.loop.time
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Slot] = deque()
        """Unanswered requests, oldest first (see the bounds in the module docstring)."""
        self.deadline = 0.0
        """Loop time after which the sweep closes this connection (0: none)."""
        self.in_message = False
        self.in_head = False
        self.read_size = 0
        self.head_raw = 0
        """Bytes fed while in a head, but for the slice where it began: with slices of
        ``max_header_bytes``, httptools holds at most twice that of an unfinished head."""
        self.closing = False
        """No more requests are read; close once ``pending`` is written."""
        self.read_paused = False
        self.write_paused = False
        self.flush_soon = False
        """A flush is scheduled for the next loop iteration."""
        self.ready = False
        """Answers were made in this feed: flush after it (one write per read)."""
        self.url = b""
        self.head_size = 0
        self.signature: str | None = None
        self.reject: Answer | None = None
        self.chunks: list[bytes] = []
        self.body_size = 0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if len(self.server.conns) >= self.limits.max_connections:
            self.transport.write(render((503, b""), close=True))
            self.transport.close()
            return
        self.server.conns.add(self)
        self.deadline = self.time() + self.limits.idle_timeout_s

    def data_received(self, data: bytes) -> None:
        step = self.limits.max_header_bytes
        if len(data) <= step:
            self._feed(data)
        else:
            view = memoryview(data)
            for start in range(0, len(data), step):  # so that a head is counted slice by slice
                if self.closing:
                    break
                self._feed(view[start : start + step])
        if self.ready:  # answers made in the parser: one write for the whole read
            self._flush()

    def _feed(self, data: bytes | memoryview) -> None:
        if self.closing:
            return
        self.read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Stop):
                self._fail(cause.status if isinstance(cause, _Fatal) else 400)
        except httptools.HttpParserUpgrade:
            self._fail(400)
        except httptools.HttpParserError:
            if not self.closing:  # (llhttp refuses data after "Connection: close": ignored)
                self._fail(400)
        else:
            if self.in_head:
                # a header line not complete yet is accumulated inside httptools: bound it
                self.head_raw += len(data)
                if self.head_raw > self.limits.max_header_bytes:
                    self._fail(431)

    def eof_received(self) -> bool | None:
        self.closing = True
        if not self.pending:
            return None  # the transport closes itself
        return True  # half-closed: answer what was asked, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for slot in self.pending:
            if slot.task is not None:
                slot.task.cancel()
        self.pending.clear()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline = self.time() + self.limits.request_timeout_s
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume_reading()
        self._rearm()

    # -- httptools callbacks (in feed_data) ------------------------------------------------

    def on_message_begin(self) -> None:
        if self.closing:  # requests pipelined after a "Connection: close" one are not read
            raise _Stop
        self.in_message = True
        self.in_head = True
        self.head_raw = -self.read_size
        self.url = b""
        self.head_size = 0
        self.signature = None
        self.reject = None
        self.body_size = 0  # (chunks: emptied when the last message completed)
        self.deadline = self.time() + self.limits.request_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        size = self.head_size = self.head_size + n + len(value) + 4
        if size > self.max_head:
            raise _Fatal(431)
        # two names matter: compare lengths before case-folding
        if n == _SIGNATURE_LEN and name.lower() == _SIGNATURE:
            self.signature = value.decode("latin-1")
        elif (
            n == 14
            and name.lower() == b"content-length"
            and value.strip().isdigit()
            and int(value) > self.max_body
        ):
            raise _Fatal(413)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.reject = self.service.route(self.parser.get_method(), self.url)

    def on_body(self, body: bytes) -> None:
        if self.reject is not None:
            return  # read and dropped: the answer is already known
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise _Fatal(413)
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        close = not self.parser.should_keep_alive()
        if close:
            self.closing = True
        answer: Answer | Awaitable[Answer] | None = self.reject
        if answer is None:
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            answer = self.service.dispatch(self.signature, body)
        if isinstance(answer, tuple):  # answered now: written once this read is parsed
            self.pending.append(_Slot(render(answer, close)))
            self.ready = True
        else:
            slot = _Slot()
            self.pending.append(slot)
            slot.task = self.loop.create_task(self._run(slot, answer, close))
        if len(self.pending) >= self.limits.max_pipeline:
            self._pause_reading()
        self.chunks = []
        self._rearm()

    # -- answering --------------------------------------------------------------------------

    async def _run(self, slot: _Slot, answer: Awaitable[Answer], close: bool) -> None:
        slot.data = render(await answer, close)
        slot.task = None
        if len(self.pending) == 1:
            self._flush()  # alone: at once
        elif not self.flush_soon:
            # others were asked with it: they finish in this loop iteration too if they
            # can, so write them all in the next one, together
            self.flush_soon = True
            self.loop.call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self.flush_soon = False
        self._flush()

    def _flush(self) -> None:
        """Write the answers ready at the head of ``pending``, in order, in one write."""
        self.ready = False
        pending = self.pending
        out: list[bytes] = []
        while pending and pending[0].data is not None:
            out.append(cast(bytes, pending.popleft().data))
        transport = self.transport
        if not out or transport is None or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)  # one writev, no join
        if self.closing and not pending:
            transport.close()
            return
        self._maybe_resume_reading()
        self._rearm()

    def _fail(self, status: int) -> None:
        """Answer ``status`` after the answers already owed, then close."""
        self.closing = True
        self.in_message = self.in_head = False
        self.chunks = []
        self.pending.append(_Slot(render((status, b""), close=True)))
        self._flush()

    def _count(self, n: int) -> None:
        self.head_size += n
        if self.head_size > self.limits.max_header_bytes:
            raise _Fatal(431)

    def _rearm(self) -> None:
        if self.write_paused or self.in_message:
            return  # their deadline is already set
        if self.pending:
            self.deadline = 0.0  # waiting on handlers: the caller's timeout, not ours
        else:
            self.deadline = self.time() + self.limits.idle_timeout_s

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self.read_paused
            and not self.write_paused
            and len(self.pending) < self.limits.max_pipeline
            and self.transport is not None
        ):
            self.read_paused = False
            self.transport.resume_reading()

    # -- the server's calls -----------------------------------------------------------------

    def expire(self) -> None:
        """The deadline passed: close (with ``408`` when a request was under way)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.in_message or self.write_paused:
            if not self.write_paused:
                transport.write(render((408, b""), close=True))
            transport.close()
            if self.write_paused:
                transport.abort()
        else:
            transport.close()

    def shutdown(self) -> None:
        """Graceful close: read no more requests; close once those asked are answered."""
        self.closing = True
        if self.transport is not None and not self.pending:
            self.transport.close()


class HttpServer:
    """Serves one :class:`Responder` (a :class:`~wsgate.sdk.Service`) on a port.

    See the module docstring for its guarantees.

    Call order: :meth:`start` once, then :meth:`aclose` once. ``conns`` holds
    the open connections (at most ``max_connections``); each removes itself
    when it is lost.
    """

    def __init__(self, service: Responder, limits: ServerLimits) -> None:
        self.service = service
        self.limits = limits
        self.conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop served on (set by :meth:`start`)."""
        assert self._loop is not None, "start() first"
        return self._loop

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when started with port 0)."""
        assert self._server is not None, "start() first"
        return int(cast(asyncio.Server, self._server).sockets[0].getsockname()[1])

    def now(self) -> float:
        """The loop's clock (deadlines are in it)."""
        assert self._loop is not None
        return self._loop.time()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` and start the timeout sweep."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Conn(self), host, port, backlog=self.limits.backlog
        )
        self._sweeper = self._loop.create_task(self._sweep())

    def forget(self, conn: _Conn) -> None:
        """A connection was lost (called by it)."""
        self.conns.discard(conn)
        if not self.conns:
            self._empty.set()

    async def _sweep(self) -> None:
        for _ in iter(int, 1):  # until cancelled by aclose()
            await asyncio.sleep(self.limits.tick_s)  # the sweep's period, not a synchronization
            now = self.now()
            for conn in [c for c in self.conns if c.deadline and c.deadline < now]:
                conn.expire()

    async def aclose(self) -> None:
        """Stop listening, answer what is in flight, close; abort what is left after grace."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.shutdown()
        if self.conns:
            self._empty.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), self.limits.grace_s)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()


def run(server: HttpServer, host: str, port: int) -> None:
    """Serve on ``host:port`` until SIGINT/SIGTERM, then close gracefully (on uvloop if any)."""

    async def main() -> None:
        await server.start(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("wsgate.sdk: serving on http://%s:%d", host, server.port)
        await stop.wait()
        await server.aclose()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main())
    else:
        uvloop.run(main())
