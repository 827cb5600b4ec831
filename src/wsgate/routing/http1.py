"""A lean HTTP/1.1 client for service invocations (the invoker's transport).

Only what :class:`~wsgate.routing.http_invoker.HttpInvoker` needs, on the
event loop's own transports:

- per service instance (URL) a :class:`_Pool` of keep-alive connections,
  each an :class:`asyncio.Protocol`; a call takes the most recently used
  idle connection (LIFO: the least likely to have been closed by the server)
  or opens a new one, so the pool grows to the calls in flight (bounded by
  the service's ``max_concurrency``) and keeps at most ``max_idle`` idle
  connections, each closed after ``idle_timeout_s`` unused;
- a request is the instance's pre-built header block (request line,
  ``Host``, ``Content-Type``, ``User-Agent``), ``Content-Length``, the
  caller's per-request header lines and the body, written with one
  ``transport.write``;
- the response is read by a small strict parser: status line, header lines
  (no obsolete line folding, at most 64 KiB of them), a body by
  ``Content-Length``, ``Transfer-Encoding: chunked`` or, without either,
  until the server closes (for a ``200``; any other status is the whole
  answer then, and the connection is closed); ``1xx`` answers are skipped;
  ``204``/``304`` have no body. A body over ``max_response_bytes`` is not read: the call gets the
  status with ``None`` for the body and the connection is dropped;
- one ``loop.call_at`` timer per call bounds the whole exchange (connecting
  included) by the caller's deadline;
- ``https://`` URLs use TLS (the default context, or the one given).

Failures, as exceptions of :class:`HttpError`:

- :class:`ConnectFailed`: the connection could not be made (refused, reset
  while connecting, DNS, TLS handshake, bad URL) — the request was not sent;
- :class:`ResponseTimeout`: no complete answer by the deadline;
- :class:`Dropped`: the connection closed before the answer was complete;
- :class:`ProtocolError`: the answer is not valid HTTP/1.1 (as this parser
  reads it).

A reused connection that the server closed while it was idle (the keep-alive
race: the request crossed the close) is retried once, transparently, on a
fresh connection — only when no byte of an answer arrived. A request whose
answer had begun is never sent again.

Two ways to call: ``await client.post(...)`` (or ``pool.send``), and, with no
task or future, ``pool.start_idle(request, deadline, done)`` on an idle
connection, whose ``done(status, body, error)`` runs from the protocol's
callbacks; it may get :class:`Unanswered` (the keep-alive race), and the
caller then sends again with ``pool.send(..., reuse=False)``.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from functools import partial
from typing import Final, cast
from urllib.parse import urlsplit

__all__ = [
    "ConnectFailed",
    "Dropped",
    "Http1Client",
    "HttpError",
    "ProtocolError",
    "ResponseTimeout",
    "Unanswered",
]

MAX_HEAD: Final = 65536
"""Most bytes of a status line and headers."""
_MAX_CHUNK_LINE: Final = 1024

# Parser states
_HEAD: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_EOF: Final = 3
_IDLE: Final = 4
_DEAD: Final = 5


class HttpError(Exception):
    """A failed exchange (see the subclasses)."""


class ConnectFailed(HttpError):
    """No connection: refused, DNS, TLS handshake, bad URL. Nothing was sent."""


class ResponseTimeout(HttpError):
    """No complete answer before the deadline."""


class Dropped(HttpError):
    """The connection closed before the answer was complete."""


class ProtocolError(HttpError):
    """The answer is not valid HTTP/1.1."""


class Unanswered(HttpError):
    """Closed before any byte of the answer (retried once on a reused connection)."""


Response = tuple[int, bytes | None]
"""Status and body; ``None`` for a body over the size limit (not read)."""

Done = Callable[[int, "bytes | None", "HttpError | None"], None]
"""Told the outcome of a call once: ``(status, body, None)`` or ``(0, None, error)``."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    __slots__ = (
        "buf",
        "chunks",
        "close_after",
        "done",
        "got",
        "idle_since",
        "need",
        "pool",
        "scan",
        "size",
        "state",
        "status",
        "timer",
        "transport",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.done: Done | None = None
        """The current call's callback; ``None`` while idle."""
        self.timer: asyncio.TimerHandle | None = None
        self.state = _IDLE
        self.buf = bytearray()
        self.scan = 0
        """Where to resume looking for the end of the head in ``buf``."""
        self.chunks: list[bytes] = []
        self.size = 0
        self.need = 0
        self.status = 0
        self.got = False
        """A byte of the current answer arrived."""
        self.close_after = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.pool.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        pool = self.pool
        pool.conns.discard(self)
        if self.state == _IDLE:
            if self in pool.idle:
                pool.idle.remove(self)
            return
        if self.done is None:
            return
        if self.state == _EOF:
            self._finish(b"".join(self.chunks))  # the body ends with the connection
        elif not self.got:
            self._fail(Unanswered(f"closed before answering: {exc}"))
        else:
            self._fail(Dropped(f"closed mid-answer: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.done is None:  # nothing asked: a confused server
            self.state = _IDLE
            if self.transport is not None:
                self.transport.abort()
            return
        self.got = True
        try:
            if self.state == _HEAD:
                if self.buf:
                    self.buf += data
                    data = bytes(self.buf)
                    self.buf.clear()
                if not self._head(data):
                    return
            elif self.state == _LENGTH:
                self._length(data)
            elif self.state == _CHUNKED:
                self.buf += data
                self._chunked()
            else:  # _EOF
                self._until_eof(data)
        except ProtocolError as exc:
            self._fail(exc)

    # A call

    def start(self, request: bytes, deadline: float, done: Done) -> None:
        """Send ``request``; ``done`` gets the answer (never called from here)."""
        assert self.transport is not None
        self.done = done
        self.state = _HEAD
        self.got = False
        self.scan = 0
        self.timer = self.pool.loop.call_at(deadline, self._timeout)
        self.transport.write(request)

    def abort(self) -> None:
        """Drop the connection (a call was abandoned mid-way)."""
        self.done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.state = _DEAD  # connection_lost must not touch the idle list
        if self.transport is not None:
            self.transport.abort()

    def _timeout(self) -> None:
        self.timer = None
        self._fail(ResponseTimeout("no answer in time"))

    def _fail(self, exc: HttpError) -> None:
        done = self.done
        self.abort()
        if done is not None:
            done(0, None, exc)

    def _finish(self, body: bytes | None) -> None:
        done = self.done
        self.done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.chunks = []
        transport = self.transport
        if body is None or self.close_after or transport is None or transport.is_closing():
            self.state = _DEAD
            if transport is None:
                pass
            elif body is None:
                transport.abort()  # the rest of an oversized answer stays unread
            else:
                transport.close()
        else:
            self.state = _IDLE
            self.pool.release(self)
        if done is not None:
            done(self.status, body, None)

    # The parser

    def _head(self, data: bytes) -> bool:
        """Parse a head at the start of ``data``; ``False`` when waiting for more."""
        while True:
            end = data.find(b"\r\n\r\n", self.scan)
            if end < 0:
                if len(data) > MAX_HEAD:
                    raise ProtocolError("header block too large")
                self.scan = max(0, len(data) - 3)
                self.buf += data
                return False
            if end > MAX_HEAD:
                raise ProtocolError("header block too large")
            self.scan = 0
            status, length, chunked, close = _parse_head(data[:end])
            rest = data[end + 4 :]
            if 100 <= status < 200:
                if status == 101:
                    raise ProtocolError("unexpected 101")
                data = rest  # an interim answer: the real one follows
                if not data:
                    return False
                continue
            self.status = status
            self.close_after = close
            self.size = 0
            self.chunks = []
            limit = self.pool.max_body
            if status == 204 or status == 304:
                length, chunked = 0, False
            if chunked:
                if length is not None:
                    raise ProtocolError("both Content-Length and chunked")
                self.state = _CHUNKED
                self.need = -1
                self.buf += rest
                self._chunked()
            elif length is not None:
                if length > limit:
                    self._finish(None)
                    return True
                if len(rest) >= length:
                    if len(rest) > length:
                        self.close_after = True  # bytes nobody asked for
                    self._finish(rest[:length] if len(rest) > length else rest)
                    return True
                self.state = _LENGTH
                self.need = length
                if rest:
                    self._length(rest)
            else:
                self.close_after = True
                if status != 200:  # only a 200's body is wanted: the status is the answer
                    self._finish(b"")
                    return True
                self.state = _EOF
                if rest:
                    self._until_eof(rest)
            return True

    def _length(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= self.need:
            body = b"".join(self.chunks)
            if len(body) > self.need:
                self.close_after = True
                body = body[: self.need]
            self._finish(body)

    def _until_eof(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.pool.max_body:
            self._finish(None)
            return
        self.chunks.append(data)

    def _chunked(self) -> None:
        buf = self.buf
        while self.done is not None:
            need = self.need
            if need == -1 or need == -2:  # a chunk-size line, or a trailer line
                i = buf.find(b"\r\n")
                if i < 0:
                    if len(buf) > _MAX_CHUNK_LINE and need == -1:
                        raise ProtocolError("chunk size line too long")
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("trailers too large")
                    return
                line = bytes(buf[:i])
                del buf[: i + 2]
                if need == -2:
                    if not line:
                        if buf:
                            self.close_after = True
                        buf.clear()
                        self._finish(b"".join(self.chunks))
                    continue
                digits = line.split(b";", 1)[0].strip()
                if not digits or len(digits) > 15 or digits.strip(b"0123456789abcdefABCDEF"):
                    raise ProtocolError("bad chunk size")
                size = int(digits, 16)
                if size == 0:
                    self.need = -2
                    continue
                self.size += size
                if self.size > self.pool.max_body:
                    buf.clear()
                    self._finish(None)
                    return
                self.need = size
            else:
                if len(buf) < need + 2:
                    return
                if buf[need : need + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                self.chunks.append(bytes(buf[:need]))
                del buf[: need + 2]
                self.need = -1


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked, close-after, from a response head."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise ProtocolError("bare CR or LF in the head")
    lines = head.split(b"\r\n")
    line = lines[0]
    bad = line[:7] != b"HTTP/1." or len(line) < 12 or line[8:9] != b" "
    if bad or (len(line) > 12 and line[12:13] != b" "):
        raise ProtocolError(f"bad status line {line[:40]!r}")
    code = line[9:12]
    if not code.isdigit():
        raise ProtocolError(f"bad status line {line[:40]!r}")
    minor = line[7:8]
    if minor not in (b"0", b"1"):
        raise ProtocolError(f"unsupported version {line[:8]!r}")
    close = minor == b"0"
    length: int | None = None
    chunked = False
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or raw[:1] in (b" ", b"\t"):
            raise ProtocolError(f"bad header line {raw[:40]!r}")
        lname = name.lower()
        if lname == b"content-length":
            v = value.strip()
            if not v.isdigit() or len(v) > 18 or (length is not None and int(v) != length):
                raise ProtocolError("bad Content-Length")
            length = int(v)
        elif lname == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if codings != [b"chunked"] or chunked:
                raise ProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
            chunked = True
        elif lname == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens and minor == b"0":
                close = False
    return int(code), length, chunked, close


class _Pool:
    """The connections to one instance URL."""

    __slots__ = (
        "client",
        "conns",
        "head",
        "host",
        "idle",
        "loop",
        "max_body",
        "port",
        "server_hostname",
        "ssl",
    )

    def __init__(self, client: Http1Client, url: str) -> None:
        self.client = client
        self.loop = client.loop
        self.max_body = client.max_response_bytes
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        if any(c in url for c in " \t\r\n\x00") or not url.isascii():
            raise ConnectFailed(f"bad URL {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"bad URL {url!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConnectFailed(f"bad URL {url!r}: {exc}") from None
        tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port or (443 if tls else 80)
        self.ssl: _ssl.SSLContext | None = client.ssl_context() if tls else None
        self.server_hostname = self.host if tls else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        self.head = (
            f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n"
            f"Content-Type: application/json\r\nUser-Agent: {client.user_agent}\r\n"
        ).encode("ascii")

    def encode(self, headers: bytes, body: bytes) -> bytes:
        """The whole request: the cached head, the caller's header lines, the body."""
        return b"%sContent-Length: %d\r\n%s\r\n%s" % (self.head, len(body), headers, body)

    def start_idle(self, request: bytes, deadline: float, done: Done) -> bool:
        """Send on an idle pooled connection; ``False`` (nothing sent) when none is.

        ``done`` may then get :class:`Unanswered`: the server had closed the
        connection (see :meth:`send` with ``reuse=False``).
        """
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.transport is None or conn.transport.is_closing():
                continue
            conn.start(request, deadline, done)
            return True
        return False

    async def send(self, request: bytes, deadline: float, *, reuse: bool = True) -> Response:
        """Send ``request`` and wait for the answer (see the module docstring)."""
        idle = self.idle
        while reuse and idle:
            conn = idle.pop()
            if conn.transport is None or conn.transport.is_closing():
                continue
            try:
                return await _exchange(conn, request, deadline)
            except Unanswered:
                break  # the keep-alive race: once more, on a fresh connection
        conn = await self._connect(deadline)
        try:
            return await _exchange(conn, request, deadline)
        except Unanswered as exc:
            raise Dropped(str(exc)) from None

    async def _connect(self, deadline: float) -> _Conn:
        loop = self.loop
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname,
                )
        except TimeoutError:
            raise ResponseTimeout("no connection in time") from None
        except OSError as exc:  # refused, reset, DNS (gaierror), TLS (SSLError)
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        if self.client.closed:
            conn.abort()
            raise ConnectFailed("client closed")
        return conn

    def release(self, conn: _Conn) -> None:
        client = self.client
        if client.closed or len(self.idle) >= client.max_idle:
            conn.state = _DEAD
            if conn.transport is not None:
                conn.transport.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if client.sweeper is None:
            client.schedule_sweep()

    def sweep(self, before: float) -> None:
        idle = self.idle
        while idle and idle[0].idle_since < before:
            conn = idle.pop(0)
            conn.state = _DEAD
            if conn.transport is not None:
                conn.transport.close()


def _settle(
    fut: asyncio.Future[Response], status: int, body: bytes | None, exc: HttpError | None
) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result((status, body))
    else:
        fut.set_exception(exc)


async def _exchange(conn: _Conn, request: bytes, deadline: float) -> Response:
    fut: asyncio.Future[Response] = conn.pool.loop.create_future()
    conn.start(request, deadline, partial(_settle, fut))
    try:
        return await fut
    except asyncio.CancelledError:
        conn.abort()  # the caller gave up mid-call: the connection is in an unknown state
        raise


class Http1Client:
    """Keep-alive HTTP/1.1 POSTs, pooled per URL (see the module docstring)."""

    def __init__(
        self,
        *,
        max_response_bytes: int = 1 << 20,
        idle_timeout_s: float = 15.0,
        max_idle: int = 256,
        ssl_context: _ssl.SSLContext | None = None,
        user_agent: str = "wsgate",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_response_bytes = max_response_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_idle = max_idle
        """Idle connections kept per URL."""
        self.user_agent = user_agent
        self._ssl = ssl_context
        self._pools: dict[str, _Pool] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    def ssl_context(self) -> _ssl.SSLContext:
        if self._ssl is None:
            self._ssl = _ssl.create_default_context()
        return self._ssl

    async def post(self, url: str, headers: bytes, body: bytes, deadline: float) -> Response:
        """POST ``body`` to ``url``; ``deadline`` is in ``loop.time()``.

        ``headers`` are complete header lines (``b"Name: value\\r\\n"`` each),
        added after ``Host``, ``Content-Type``, ``User-Agent`` and
        ``Content-Length``. Raises :class:`HttpError`.
        """
        pool = self.pool(url)
        return await pool.send(pool.encode(headers, body), deadline)

    def pool(self, url: str) -> _Pool:
        """The pool of ``url``'s connections; raises :class:`ConnectFailed` (bad URL, closed)."""
        if self.closed:
            raise ConnectFailed("client closed")
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = _Pool(self, url)
        return pool

    def schedule_sweep(self) -> None:
        self.sweeper = self.loop.call_later(max(0.5, self.idle_timeout_s / 2), self._sweep)

    def _sweep(self) -> None:
        self.sweeper = None
        before = self.loop.time() - self.idle_timeout_s
        for url, pool in list(self._pools.items()):
            pool.sweep(before)
            if not pool.conns and not pool.idle:
                del self._pools[url]
        if self._pools and not self.closed:
            self.schedule_sweep()

    def connections(self, url: str) -> tuple[int, int]:
        """Open and idle connections to ``url`` (for tests and metrics)."""
        pool = self._pools.get(url)
        return (0, 0) if pool is None else (len(pool.conns), len(pool.idle))

    async def aclose(self) -> None:
        """Close every connection; later calls fail with :class:`ConnectFailed`."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for pool in self._pools.values():
            pool.idle.clear()
            for conn in list(pool.conns):
                done = conn.done
                conn.abort()
                if done is not None:
                    done(0, None, Dropped("client closed"))
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run
