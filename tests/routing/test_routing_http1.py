"""The lean HTTP/1.1 client under HttpInvoker, against raw asyncio and aiohttp servers."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from tests.certs import self_signed
from tests.helpers import eventually
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, decode_action
from wsgate.routing import HttpInvoker, InvocationContext, InvocationResult, RouteTable, Service

CTX = InvocationContext(connectionId="n1.Zk3", requestId="r-1")
OK_BODY = b'{"reply":[{"type":"t/OK","payload":{"n":1}}]}'


def action() -> Action:
    decoded = decode_action(b'{"type":"svc/GET","payload":{"id":42},"meta":{"id":"c1"}}')
    assert isinstance(decoded, Action)
    return decoded


def make_service(clock: Any, *urls: str, timeout_ms: int = 2000, cap: int = 256) -> Service:
    table = RouteTable(clock=clock)
    table.add_service("svc", urls[0], timeout_ms=timeout_ms, secret="s", max_concurrency=cap)
    for url in urls[1:]:
        table.register("svc", url, ["svc/*"], ttl_s=3600)
    table.add_route("svc/*", "svc")
    service = table.lookup("svc/X")
    assert service is not None
    return service


def ok(body: bytes = OK_BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


Script = Callable[["RawServer", asyncio.Transport, int, int], None]
"""(server, transport, connection number, request number on it): answer a request."""


class _RawConn(asyncio.Protocol):
    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.buf = b""
        self.count = 0
        self.number = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.number = self.server.connections
        self.server.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.server.requests.append(head)
            self.buf = self.buf[end + 4 + length :]
            self.count += 1
            assert self.transport is not None
            self.server.script(self.server, self.transport, self.number, self.count)


class RawServer:
    """A loopback HTTP server whose answers a test scripts byte for byte."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[str] = []
        self.open: set[_RawConn] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _RawConn(self), "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/actions"
        return self.url


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[RawServer] = []

    async def start(script: Script) -> RawServer:
        srv = RawServer(script)
        await srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        for conn in list(srv.open):
            if conn.transport is not None:
                conn.transport.abort()
        if srv.server is not None:
            srv.server.close()


@pytest.fixture
async def invoker() -> AsyncIterator[HttpInvoker]:
    inv = HttpInvoker()
    yield inv
    await inv.aclose()


def answer_ok(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
    t.write(ok())


async def test_keep_alive_reuses_one_connection(raw: Any, invoker: HttpInvoker, clock: Any) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, srv.url)
    for _ in range(5):
        result = await invoker.invoke(service, action(), CTX)
        assert isinstance(result, InvocationResult) and result.replies[0].type == "t/OK"
    assert srv.connections == 1 and len(srv.requests) == 5
    assert invoker.connections(srv.url) == (1, 1)
    head = srv.requests[0].split("\r\n")
    assert head[0] == "POST /actions HTTP/1.1"
    names = [line.partition(":")[0] for line in head[1:]]
    assert names[:4] == ["Host", "Content-Type", "User-Agent", "Content-Length"]
    assert {"X-Wsgate-Connection-Id", "X-Wsgate-Request-Id", "traceparent"} <= set(names)
    assert "X-Wsgate-Signature" in names


async def test_concurrent_calls_open_more_connections_then_reuse_them(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, srv.url)
    for _ in range(3):
        results = await asyncio.gather(*(invoker.invoke(service, action(), CTX) for _ in range(8)))
        assert all(isinstance(r, InvocationResult) for r in results)
    assert srv.connections == 8 and len(srv.requests) == 24


async def test_connection_closed_while_idle_is_retried_once_on_a_fresh_one(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        if conn == 1 and n == 2:
            t.close()  # the keep-alive race: closed as the request arrived, unanswered
        else:
            t.write(ok())

    srv = await raw(script)
    service = make_service(clock, srv.url)
    assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    assert srv.connections == 2 and len(srv.requests) == 3
    assert service.instances[0].healthy(clock())


async def test_server_closing_an_idle_connection_is_noticed(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        t.write(ok())
        asyncio.get_running_loop().call_later(0.02, t.close)  # idle timeout of the server

    srv = await raw(script)
    service = make_service(clock, srv.url)
    assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    await eventually(lambda: invoker.connections(srv.url) == (0, 0), what="the closed connection left the pool")
    assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    assert srv.connections == 2 and len(srv.requests) == 2


async def test_no_retry_once_an_answer_began(raw: Any, invoker: HttpInvoker, clock: Any) -> None:
    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        if n == 1:
            t.write(ok())
        else:
            t.write(b"HTTP/1.1 200 OK\r\nContent-Le")  # then gone: it may have acted
            t.close()

    srv = await raw(script)
    service = make_service(clock, srv.url)
    assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_ERROR
    assert len(srv.requests) == 2  # not sent again
    assert not service.instances[0].healthy(clock())  # dropped mid-answer: down


async def test_fresh_connection_closed_unanswered_is_not_retried(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    srv = await raw(lambda srv, t, conn, n: t.close())
    service = make_service(clock, srv.url)
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_ERROR
    assert len(srv.requests) == 1


async def test_refused_instance_fails_over(
    raw: Any, invoker: HttpInvoker, clock: Any, refused_url: str
) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, refused_url, srv.url)
    for _ in range(3):
        assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    assert len(srv.requests) == 3
    refused, good = service.instances
    assert not refused.healthy(clock()) and good.healthy(clock())


async def test_timeout_drops_the_connection(raw: Any, invoker: HttpInvoker, clock: Any) -> None:
    srv = await raw(lambda srv, t, conn, n: None)  # never answers
    service = make_service(clock, srv.url, timeout_ms=150)
    started = time.monotonic()
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_TIMEOUT
    assert 0.1 < time.monotonic() - started < 0.6
    assert invoker.connections(srv.url) == (0, 0)
    assert not service.instances[0].healthy(clock())


async def test_timeout_covers_a_slow_body(raw: Any, invoker: HttpInvoker, clock: Any) -> None:
    srv = await raw(
        lambda srv, t, conn, n: t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{")
    )
    service = make_service(clock, srv.url, timeout_ms=150)
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_TIMEOUT


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n{}",
    ],
)
async def test_malformed_http_is_an_upstream_error(
    raw: Any, invoker: HttpInvoker, clock: Any, answer: bytes
) -> None:
    srv = await raw(lambda srv, t, conn, n: t.write(answer))
    service = make_service(clock, srv.url)
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_ERROR
    assert invoker.connections(srv.url)[1] == 0  # never reused


async def test_header_block_too_large(raw: Any, invoker: HttpInvoker, clock: Any) -> None:
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"

    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        t.write(b"HTTP/1.1 200 OK\r\n" + filler * 80)

    srv = await raw(script)
    service = make_service(clock, srv.url)
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_ERROR


@pytest.mark.parametrize(
    "answer",
    [
        ok(b'{"reply":[{"type":"big","payload":"' + b"x" * 5000 + b'"}]}'),
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n{",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 4096 + b"\r\n"
        b"1000\r\n" + b"x" * 100,
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000,
    ],
)
async def test_oversized_answers_are_refused_unread(raw: Any, clock: Any, answer: bytes) -> None:
    srv = await raw(lambda srv, t, conn, n: t.write(answer))
    service = make_service(clock, srv.url)
    invoker = HttpInvoker(max_response_bytes=4096)
    try:
        assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_ERROR
        assert invoker.connections(srv.url)[1] == 0
        assert service.instances[0].healthy(clock())  # the service's answer, not its failure
    finally:
        await invoker.aclose()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", InvocationResult()),
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", InvocationResult()),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", ErrorCode.FORBIDDEN),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom", ErrorCode.UPSTREAM_ERROR),
        (b"HTTP/1.1 404 Not Found\r\n\r\n", ErrorCode.UPSTREAM_ERROR),
    ],
)
async def test_status_codes(
    raw: Any, invoker: HttpInvoker, clock: Any, answer: bytes, expected: object
) -> None:
    srv = await raw(lambda srv, t, conn, n: t.write(answer))
    service = make_service(clock, srv.url)
    assert await invoker.invoke(service, action(), CTX) == expected
    assert service.instances[0].healthy(clock())


async def test_bodyless_answers_keep_the_connection(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    answers = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
        ok(),
    ]
    srv = await raw(lambda srv, t, conn, n: t.write(answers[(n - 1) % 4]))
    service = make_service(clock, srv.url)
    for _ in range(2):
        assert await invoker.invoke(service, action(), CTX) == InvocationResult()
        assert await invoker.invoke(service, action(), CTX) == InvocationResult()
        assert await invoker.invoke(service, action(), CTX) is ErrorCode.FORBIDDEN
        assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
    assert srv.connections == 1


async def test_answers_in_pieces_chunked_interim_and_until_close(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\n" + OK_BODY[:5] + b"\r\n"
        b"%x\r\n" % (len(OK_BODY) - 5) + OK_BODY[5:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    eof = b"HTTP/1.0 200 OK\r\n\r\n" + OK_BODY

    async def trickle(t: asyncio.Transport, data: bytes, close: bool) -> None:
        for i in range(len(data)):
            t.write(data[i : i + 1])
            if i % 7 == 0:
                await asyncio.sleep(0)  # the behaviour: the client reads the answer piece by piece
        if close:
            t.close()

    tasks: set[asyncio.Task[None]] = set()

    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        data, close = [(ok(), False), (chunked, False), (eof, True)][len(srv.requests) - 1]
        task = asyncio.ensure_future(trickle(t, data, close))
        tasks.add(task)

    srv = await raw(script)
    service = make_service(clock, srv.url)
    for _ in range(3):
        result = await invoker.invoke(service, action(), CTX)
        assert isinstance(result, InvocationResult), result
        assert msgspec.json.encode(result.replies[0].payload) == b'{"n":1}'
    assert srv.connections == 1
    # the answer until close used it up
    await eventually(lambda: invoker.connections(srv.url) == (0, 0), what="the used-up connection freed")


async def test_aiohttp_chunked_and_json_answers(
    serve: Any, invoker: HttpInvoker, clock: Any
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.path == "/json":
            return web.json_response({"reply": [{"type": "t/J"}]})
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"reply":[')
        await resp.write(b'{"type":"t/C"}]}')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{any}", handle)
    base = await serve(app)
    for path, type_ in (("json", "t/J"), ("chunked", "t/C")):
        service = make_service(clock, f"{base}/{path}")
        for _ in range(2):
            result = await invoker.invoke(service, action(), CTX)
            assert isinstance(result, InvocationResult) and result.replies[0].type == type_


async def test_cancelled_call_is_abandoned_and_its_connection_reused(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    """A caller giving up leaves the connection usable: the late answer is read and dropped."""
    loop = asyncio.get_running_loop()

    def late_first(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        body = b'{"reply":[{"type":"t/LATE%d","payload":null}]}' % n
        loop.call_later(0.1 if n == 1 else 0, t.write, ok(body))

    srv = await raw(late_first)
    service = make_service(clock, srv.url)
    task = asyncio.ensure_future(invoker.invoke(service, action(), CTX))
    await eventually(lambda: len(srv.requests) == 1, what="the request at the server")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.pool.slots.free == 256  # the slot came back at once
    assert invoker.connections(srv.url) == (1, 0)  # still waiting for the late answer
    await eventually(lambda: invoker.connections(srv.url) == (1, 1), what="answered, dropped, idle")
    result = await invoker.invoke(service, action(), CTX)
    assert isinstance(result, InvocationResult) and result.replies[0].type == "t/LATE2"
    assert srv.connections == 1


async def test_idle_connections_are_closed_after_the_idle_timeout(raw: Any, clock: Any) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, srv.url)
    invoker = HttpInvoker(idle_timeout_s=0.2)
    try:
        assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
        assert invoker.connections(srv.url) == (1, 1)
        await eventually(lambda: invoker.connections(srv.url) == (0, 0), 3.0, what="the idle connection closed")
        assert isinstance(await invoker.invoke(service, action(), CTX), InvocationResult)
        assert srv.connections == 2
    finally:
        await invoker.aclose()


async def test_aclose_ends_calls_in_flight(raw: Any, clock: Any) -> None:
    srv = await raw(lambda srv, t, conn, n: None)
    service = make_service(clock, srv.url)
    invoker = HttpInvoker()
    task = asyncio.ensure_future(invoker.invoke(service, action(), CTX))
    await eventually(lambda: len(srv.requests) == 1, what="the call in flight")
    await invoker.aclose()
    assert await task is ErrorCode.UPSTREAM_UNAVAILABLE
    assert service.instances[0].healthy(clock())  # not the instance's fault
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_UNAVAILABLE


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "http:///x", "http://h:99999/x", "http://h/a b"]
)
async def test_bad_urls_are_unreachable(invoker: HttpInvoker, clock: Any, url: str) -> None:
    service = make_service(clock, url)
    assert await invoker.invoke(service, action(), CTX) is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_https(tmp_path: Path, clock: Any) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=OK_BODY)

    app = web.Application()
    app.router.add_post("/actions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    port = runner.addresses[0][1]
    url = f"https://localhost:{port}/actions"
    try:
        trusting = HttpInvoker(ssl_context=ssl.create_default_context(cafile=str(cert)))
        service = make_service(clock, url)
        for _ in range(2):
            assert isinstance(await trusting.invoke(service, action(), CTX), InvocationResult)
        assert trusting.connections(url) == (1, 1)
        await trusting.aclose()
        # an untrusted certificate is a failed connection: unreachable
        default = HttpInvoker()
        untrusted = make_service(clock, url)
        assert await default.invoke(untrusted, action(), CTX) is ErrorCode.UPSTREAM_UNAVAILABLE
        await default.aclose()
    finally:
        await runner.cleanup()


async def test_concurrency_cap_bounds_connections(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    pending: list[asyncio.Transport] = []

    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        pending.append(t)

    srv = await raw(script)
    service = make_service(clock, srv.url, cap=3, timeout_ms=3000)
    calls = [asyncio.ensure_future(invoker.invoke(service, action(), CTX)) for _ in range(6)]
    await eventually(lambda: len(pending) == 3, what="three calls at the server")
    assert srv.connections == 3
    for i in range(3):  # each answer frees a slot (and its connection) for a waiting call
        pending[i].write(ok())
        await eventually(lambda i=i: len(pending) == 4 + i, what=f"waiting call {i + 1} sent")
    for t in pending[3:]:
        t.write(ok())
    results = await asyncio.gather(*calls)
    assert all(isinstance(r, InvocationResult) for r in results)
    assert srv.connections == 3


# HttpInvoker.start: the task-free path ------------------------------------------


async def started(invoker: HttpInvoker, service: Service) -> InvocationResult | ErrorCode:
    """One call through :meth:`HttpInvoker.start`, awaited through its callback."""
    fut: asyncio.Future[InvocationResult | ErrorCode] = asyncio.get_running_loop().create_future()
    invoker.start(service, action(), CTX, fut.set_result)
    assert not fut.done()  # never answered from within start
    return await fut


async def test_start_uses_pooled_connections_without_tasks(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, srv.url)
    assert isinstance(await started(invoker, service), InvocationResult)  # connects: a task
    await eventually(lambda: not invoker._tasks and invoker.connections(srv.url) == (1, 1),
                     what="the connecting task done, its connection idle")
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    invoker.start(service, action(), CTX, fut.set_result)
    assert not invoker._tasks  # the pooled connection took it at once
    assert isinstance(await fut, InvocationResult)
    assert srv.connections == 1 and len(srv.requests) == 2
    assert service.pool.slots.free == 256


async def test_start_retries_the_keep_alive_race_and_maps_failures(
    raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    def script(srv: RawServer, t: asyncio.Transport, conn: int, n: int) -> None:
        if conn == 1 and n == 2:
            t.close()  # closed as the request arrived
        elif len(srv.requests) == 4:
            t.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        else:
            t.write(ok())

    srv = await raw(script)
    service = make_service(clock, srv.url)
    assert isinstance(await started(invoker, service), InvocationResult)
    assert isinstance(await started(invoker, service), InvocationResult)
    assert srv.connections == 2 and len(srv.requests) == 3
    assert await started(invoker, service) is ErrorCode.UPSTREAM_ERROR
    assert not service.instances[0].healthy(clock())
    assert service.pool.slots.free == 256


async def test_start_waits_for_a_slot_and_fails_over(
    raw: Any, invoker: HttpInvoker, clock: Any, refused_url: str
) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, refused_url, srv.url, cap=1)
    results = await asyncio.gather(*(started(invoker, service) for _ in range(4)))
    assert all(isinstance(r, InvocationResult) for r in results)
    assert len(srv.requests) == 4 and srv.connections == 1


async def test_a_raising_callback_is_logged_and_the_connection_survives(
    raw: Any, invoker: HttpInvoker, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await raw(answer_ok)
    service = make_service(clock, srv.url)
    assert isinstance(await started(invoker, service), InvocationResult)

    def boom(result: object) -> None:
        raise RuntimeError("bug in the caller")

    invoker.start(service, action(), CTX, boom)
    await eventually(lambda: "invocation callback failed" in caplog.text, what="the callback's failure logged")
    assert isinstance(await started(invoker, service), InvocationResult)
    assert srv.connections == 1 and service.pool.slots.free == 256


async def test_slots_hand_over_in_order_and_survive_cancellation() -> None:
    from wsgate.routing.instances import Slots

    slots = Slots(1)
    assert slots.try_acquire() and slots.locked() and not slots.try_acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire()
        order.append(i)

    tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
    await eventually(lambda: len(slots._waiters) == 3, what="three waiters in line")
    tasks[1].cancel()
    slots.release()
    await eventually(lambda: order == [0], what="the oldest waiter served")
    slots.release()
    await eventually(lambda: order == [0, 2], what="the cancelled waiter skipped")
    slots.release()
    assert slots.free == 1 and not slots.locked()
