"""A lean HTTP/1.1 client for service invocations (the invoker's transport).

Only what :class:`~wsgate.routing.http_invoker.HttpInvoker` needs, on the
event loop's own transports:

- per service instance (URL) a :class:`Pool` of keep-alive connections
  (:class:`~wsgate.routing.http1_conn.Conn`, which reads the answers with the
  pure parser of :mod:`.http1_parse`);
- a request is the instance's pre-built header block (request line,
  ``Host``, ``Content-Type``, ``User-Agent``), ``Content-Length``, the
  caller's per-request header lines and the body;
- **writes are coalesced**: requests are queued on their connection and
  written at the end of the event-loop iteration, one ``transport.write``
  per connection for all its requests of that iteration. A service thus
  wakes once for a batch instead of once per request, and the gateway makes
  one system call per batch;
- **pipelining** (``depth``, the service's ``pipeline`` setting): a
  connection may carry up to ``depth`` unanswered requests. A call goes to
  the connection already taking requests in this iteration while it has
  room, else to an idle connection (the most recently used: the least
  likely to have been closed by the server), else, with ``depth`` > 1, to
  the open connection with the fewest unanswered requests below ``depth``,
  else to a new connection. With ``depth`` 1 (the default) every
  connection has at most one request in flight, and the pool grows to the
  calls in flight (bounded by the service's ``max_concurrency``);
- the pool keeps at most ``max_idle`` idle connections per URL, each closed
  after ``idle_timeout_s`` unused;
- ``https://`` URLs use TLS (the default context, or the one given).

Failures are :class:`~wsgate.exceptions.HttpError` subclasses (all under
:class:`~wsgate.exceptions.WsgateError`), described in :mod:`.http1_conn`.
A call that got :class:`Unanswered` on a reused connection (the keep-alive
race, or queued behind an answer that announced ``Connection: close``) is
sent once more on a fresh connection — never a request whose answer had
begun, nor one written on a connection that had answered since.

Two ways to call: ``await client.post(...)`` (or ``pool.send``), and, with no
task or future, ``pool.start(request, call, depth)`` on a pooled connection,
where ``call`` is the caller's :class:`~wsgate.routing.http1_conn.Pending`
(its ``deadline`` set), whose ``answer(status, body, error)`` runs from the
protocol's callbacks; it may get :class:`Unanswered`, and the caller then
sends again with ``pool.send(..., reuse=False)``.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Final
from urllib.parse import urlsplit

from wsgate.exceptions import (
    ConnectFailed,
    Dropped,
    HttpError,
    ProtocolError,
    ResponseTimeout,
    Unanswered,
)
from wsgate.routing.http1_conn import Conn, Pending
from wsgate.routing.http1_parse import MAX_HEAD

__all__ = [
    "MAX_HEAD",
    "MAX_PIPELINE",
    "ConnectFailed",
    "Dropped",
    "Http1Client",
    "HttpError",
    "Pending",
    "Pool",
    "ProtocolError",
    "Response",
    "ResponseTimeout",
    "Unanswered",
]

MAX_PIPELINE: Final = 64
"""Most requests one connection may carry unanswered."""

Response = tuple[int, bytes | None]
"""Status and body; ``None`` for a body over the size limit (not read)."""


class Pool:
    """The connections to one instance URL."""

    __slots__ = (
        "client",
        "conns",
        "filling",
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
        self.idle: list[Conn] = []
        self.conns: set[Conn] = set()
        self.filling: Conn | None = None
        """The connection taking this iteration's requests (until the flush)."""
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

    def start(self, request: bytes, call: Pending, depth: int = 1) -> bool:
        """Queue ``call`` on a pooled connection; ``False`` (nothing queued) when none
        has room.

        ``call.answer`` may then get :class:`Unanswered` (see :meth:`send` with
        ``reuse=False``).
        """
        conn = self.filling
        if conn is None or len(conn.calls) + conn.reserved >= depth or not conn.usable():
            # The connection to take (the module docstring's order), picked here
            # rather than in a method of its own: one frame less per call.
            picked: Conn | None = None
            idle = self.idle
            while idle:
                conn = idle.pop()
                if conn.usable():
                    picked = conn
                    break
            if picked is None and depth > 1:  # the open connection with the most room
                room = 0
                for conn in self.conns:
                    free = depth - len(conn.calls) - conn.reserved
                    if free > room and conn.usable():
                        picked, room = conn, free
            if picked is None:
                return False
            conn = self.filling = picked
        conn.queue(request, call)
        return True

    async def send(
        self, request: bytes, deadline: float, *, reuse: bool = True, depth: int = 1
    ) -> Response:
        """Send ``request`` and wait for the answer (see the module docstring)."""
        if reuse:
            call = _Waiter(self.loop.create_future(), deadline)
            if self.start(request, call, depth):
                try:
                    return await call.fut
                except Unanswered:
                    pass  # the keep-alive race: once more, on a fresh connection
        conn = await self._connect(deadline)
        conn.reserved = 0  # the opener takes its place
        if not conn.usable():  # closed before its opener got to it: nothing was sent
            raise ConnectFailed("closed as soon as opened")
        call = _Waiter(self.loop.create_future(), deadline)
        conn.queue(request, call)
        try:
            return await call.fut
        except Unanswered as exc:
            raise Dropped(str(exc)) from None

    async def _connect(self, deadline: float) -> Conn:
        loop = self.loop
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: Conn(self, reserved=1),  # its first place is the opener's
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
            conn.drop(Dropped, "client closed")
            raise ConnectFailed("client closed")
        return conn

    def release(self, conn: Conn) -> None:
        """``conn`` has no call left: keep it idle, or close it past ``max_idle``."""
        if self.filling is conn:
            self.filling = None
        client = self.client
        if client.closed or len(self.idle) >= client.max_idle or not conn.usable():
            conn.drop(Dropped, "", abort=False)
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if client.sweeper is None:
            client.schedule_sweep()

    def forget(self, conn: Conn) -> None:
        """``conn`` is closing: it takes no more calls."""
        if self.filling is conn:
            self.filling = None
        if conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, before: float) -> None:
        idle = self.idle
        while idle and idle[0].idle_since < before:
            idle[0].drop(Dropped, "", abort=False)  # (forget() takes it off the list)


class _Waiter(Pending):
    """A call of :meth:`Pool.send`: the answer settles ``fut``. When the caller gave up
    (the awaiting task was cancelled, which cancels ``fut``), the answer is still
    read (the connection stays usable), then dropped."""

    __slots__ = ("deadline", "fut")

    def __init__(self, fut: asyncio.Future[Response], deadline: float) -> None:
        self.fut = fut
        self.deadline = deadline

    def answer(self, status: int, body: bytes | None, exc: HttpError | None) -> None:
        fut = self.fut
        if fut.done():
            return
        if exc is None:
            fut.set_result((status, body))
        else:
            fut.set_exception(exc)


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
        self._pools: dict[str, Pool] = {}
        self._dirty: list[Conn] = []
        """Connections with requests queued in this iteration."""
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    def ssl_context(self) -> _ssl.SSLContext:
        if self._ssl is None:
            self._ssl = _ssl.create_default_context()
        return self._ssl

    async def post(
        self, url: str, headers: bytes, body: bytes, deadline: float, *, depth: int = 1
    ) -> Response:
        """POST ``body`` to ``url``; ``deadline`` is in ``loop.time()``.

        ``headers`` are complete header lines (``b"Name: value\\r\\n"`` each),
        added after ``Host``, ``Content-Type``, ``User-Agent`` and
        ``Content-Length``. Raises :class:`HttpError`.
        """
        pool = self.pool(url)
        return await pool.send(pool.encode(headers, body), deadline, depth=depth)

    def pool(self, url: str) -> Pool:
        """The pool of ``url``'s connections; raises :class:`ConnectFailed` (bad URL, closed)."""
        if self.closed:
            raise ConnectFailed("client closed")
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = Pool(self, url)
        return pool

    def dirty(self, conn: Conn) -> None:
        """``conn`` has its first request of this iteration queued: flush it at the end."""
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            pool = conn.pool
            if pool.filling is conn:
                pool.filling = None
            conn.flush()

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
            for conn in list(pool.conns) + pool.idle:
                conn.drop(Dropped, "client closed")
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run
