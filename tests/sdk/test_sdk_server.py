"""wsgate.sdk.Service under its built-in httptools server, under uvicorn, mounted in Starlette.

Real sockets on 127.0.0.1: a real node calls the service (signing every
request), and raw HTTP/1.1 clients check the server's bounds one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools
import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.e2e.gateway import Running, make_config, running
from tests.helpers import eventually, free_port
from wsgate import sdk
from wsgate.routing import InvocationContext, sign
from wsgate.sdk.server import HttpServer, ServerLimits

SECRET = "s3cret"
SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("SEEN", default="")
CTX = InvocationContext(connectionId="n1.abc", userId="u7", hub="acme")


class Gates:
    """Events a handler waits on, so a test decides when each answer is ready."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.entered: list[str] = []
        self.tasks: list[asyncio.Task[Any] | None] = []
        """``asyncio.current_task()`` as each plain ``def`` handler saw it."""

    def event(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())


def build(gates: Gates | None = None) -> sdk.Service:
    service = sdk.Service(secret=SECRET, max_body_bytes=4096)
    gates = gates or Gates()

    @service.action("svc/ECHO")
    async def echo(action: dict[str, Any], ctx: sdk.Context) -> list[dict[str, Any]]:
        return [{"type": "svc/ECHOED", "payload": {"got": action.get("payload"), "by": ctx.userId}}]

    @service.action("svc/WAIT")
    async def wait(action: dict[str, Any], ctx: sdk.Context) -> dict[str, Any]:
        key = str(action["payload"])
        gates.entered.append(key)
        await asyncio.wait_for(gates.event(key).wait(), 5)
        return {"type": "svc/WAITED", "payload": key}

    @service.action("svc/REFUSE")
    async def refuse(action: dict[str, Any], ctx: sdk.Context) -> None:
        raise sdk.Refused("not you")

    @service.action("sync/ECHO")
    def sync_echo(action: dict[str, Any], ctx: sdk.Context) -> dict[str, Any]:
        gates.tasks.append(asyncio.current_task())
        return {"type": "sync/ECHOED", "payload": action.get("payload")}

    @service.action("sync/CONTEXT")
    def sync_context(action: dict[str, Any], ctx: sdk.Context) -> dict[str, Any]:
        before = SEEN.get()
        SEEN.set(str(action["payload"]))
        return {"type": "sync/CONTEXT", "payload": before}

    @service.action("eager/ECHO")
    async def eager_echo(action: dict[str, Any], ctx: sdk.Context) -> dict[str, Any]:
        gates.tasks.append(asyncio.current_task())  # never awaits: run without a task
        return {"type": "eager/ECHOED", "payload": action.get("payload")}

    @service.action("sync/REFUSE")
    def sync_refuse(action: dict[str, Any], ctx: sdk.Context) -> None:
        raise sdk.Refused("not you either")

    @service.action("sync/BOOM")
    def sync_boom(action: dict[str, Any], ctx: sdk.Context) -> None:
        raise RuntimeError("secret detail")

    return service


def invocation(type_: str, payload: Any = None) -> bytes:
    return msgspec.json.encode({"action": {"type": type_, "payload": payload}, "context": CTX})


def request(
    body: bytes, *, signed: bool = True, path: str = "/actions", extra: bytes = b""
) -> bytes:
    sig = (
        b"X-Wsgate-Signature: %s\r\n" % sign(SECRET, body, int(time.time())).encode()
        if signed
        else b""
    )
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n%s%s"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), sig, extra, len(body), body)
    )


class Answers:
    """Reads HTTP/1.1 answers off a real connection with httptools."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes, dict[bytes, bytes]]] = []
        self._body = b""
        self._headers: dict[bytes, bytes] = {}
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.got.append((self.parser.get_status_code(), self._body, self._headers))
        self._body, self._headers = b"", {}


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answers = Answers()
        self.closed = False

    async def read(
        self, n: int, timeout: float = 5.0
    ) -> list[tuple[int, bytes, dict[bytes, bytes]]]:
        """Read until ``n`` answers arrived in all (or the server closed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(10_000):
            if len(self.answers.got) >= n or self.closed:
                break
            data = await asyncio.wait_for(
                self.reader.read(65536), max(0.01, deadline - loop.time())
            )
            if not data:
                self.closed = True
                break
            self.answers.parser.feed_data(data)
        return self.answers.got

    async def closes(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (reading what comes)."""
        with contextlib.suppress(TimeoutError):
            await self.read(10**6, timeout)
        return self.closed


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def builtin(service: sdk.Service | None = None, **limits: Any) -> AsyncIterator[HttpServer]:
    server: HttpServer = await (service or build()).serve("127.0.0.1", 0, ServerLimits(**limits))
    try:
        yield server
    finally:
        await server.aclose()


@contextlib.asynccontextmanager
async def under_uvicorn(app: Any) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), what="uvicorn started")
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def node_calling(url: str) -> AsyncIterator[Running]:
    config = make_config(
        services={"svc": {"url": url, "secret": SECRET, "timeout_ms": 3000, "pipeline": 4}},
        routes=[{"match": "svc/*", "service": "svc"}],
    )
    async with running(config) as gw:
        yield gw


async def through_the_gateway(url: str) -> None:
    """A real node signs and sends; replies and a refusal come back to the peer."""
    async with node_calling(url) as gw, gw.peer("alice") as alice:
        for i in range(5):
            await alice.send("svc/ECHO", {"n": i}, id=f"e{i}")
        got = [await alice.expect("svc/ECHOED") for _ in range(5)]
        assert sorted(g["meta"]["inReplyTo"] for g in got) == [f"e{i}" for i in range(5)]
        assert all(
            g["payload"] == {"got": {"n": int(g["meta"]["inReplyTo"][1:])}, "by": "alice"}
            for g in got
        )
        await alice.send("svc/REFUSE", {}, id="r")
        err = await alice.expect("@@wsgate/ERROR")
        assert (err["payload"]["code"], err["meta"]["inReplyTo"]) == ("FORBIDDEN", "r")


async def test_a_node_calls_the_builtin_server() -> None:
    async with builtin() as server:
        await through_the_gateway(f"http://127.0.0.1:{server.port}/actions")


async def test_a_node_calls_the_service_under_uvicorn() -> None:
    async with under_uvicorn(build()) as port:
        await through_the_gateway(f"http://127.0.0.1:{port}/actions")


async def test_a_node_calls_the_service_mounted_in_starlette_at_a_sub_path() -> None:
    app = Starlette(routes=[Mount("/svc", app=build())])
    async with under_uvicorn(app) as port:
        await through_the_gateway(f"http://127.0.0.1:{port}/svc/actions")
        async with connect(port) as c:  # the service's own path, outside the mount, is not it
            c.writer.write(request(invocation("svc/ECHO"), path="/actions"))
            [(status, _, _)] = await c.read(1)
            assert status == 404


async def statuses(port: int, raw: bytes, n: int = 1) -> list[int]:
    async with connect(port) as c:
        c.writer.write(raw)
        return [status for status, _, _ in await c.read(n)]


@pytest.mark.parametrize("where", ["builtin", "uvicorn"])
async def test_signature_refusal_bad_body_path_and_method(where: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if where == "builtin":
            port = (await stack.enter_async_context(builtin())).port
        else:
            port = await stack.enter_async_context(under_uvicorn(build()))
        assert await statuses(port, request(invocation("svc/ECHO", 1))) == [200]
        assert await statuses(port, request(invocation("svc/ECHO", 1), signed=False)) == [401]
        tampered = request(invocation("svc/ECHO", 1)).replace(b'"u7"', b'"u8"')
        assert await statuses(port, tampered) == [401]
        assert await statuses(port, request(invocation("svc/REFUSE"))) == [403]
        assert await statuses(port, request(b"not json")) == [400]
        assert await statuses(port, request(b'{"action": {}, "context": {}}')) == [400]
        assert await statuses(port, request(invocation("nothing/X"))) == [404]
        assert await statuses(port, request(invocation("svc/ECHO"), path="/elsewhere")) == [404]
        get = b"GET /actions HTTP/1.1\r\nHost: t\r\n\r\n"
        assert await statuses(port, get) == [405]
        big = invocation("svc/ECHO", "x" * 5000)
        assert await statuses(port, request(big)) == [413]


async def test_keep_alive_and_pipelined_answers_come_in_order() -> None:
    gates = Gates()
    async with builtin(build(gates)) as server, connect(server.port) as c:
        c.writer.write(request(invocation("svc/ECHO", "a")))
        assert [s for s, _, _ in await c.read(1)] == [200]
        c.writer.write(request(invocation("svc/ECHO", "b")))  # the same connection, kept alive
        [_, (status, body, headers)] = await c.read(2)
        assert status == 200 and b'"got":"b"' in body and b"connection" not in headers
        # five pipelined in one write; their handlers finish last-first
        keys = [str(i) for i in range(5)]
        c.writer.write(b"".join(request(invocation("svc/WAIT", k)) for k in keys))
        await eventually(lambda: sorted(gates.entered) == keys, what="all five handlers running")
        for k in reversed(keys):
            gates.event(k).set()
        got = await c.read(7)
        assert [msgspec.json.decode(b)["reply"][0]["payload"] for _, b, _ in got[2:]] == keys
        assert not c.closed


async def test_a_body_over_the_cap_is_refused_unread_and_closed() -> None:
    async with builtin() as server:
        async with connect(server.port) as c:  # by Content-Length, before any body byte
            c.writer.write(b"POST /actions HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\n\r\n")
            [(status, _, headers)] = await c.read(1)
            assert status == 413 and headers[b"connection"] == b"close"
            assert await c.closes()
        async with connect(server.port) as c:  # chunked, counted as it comes
            c.writer.write(
                b"POST /actions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(5):
                c.writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            [(status, _, _)] = await c.read(1)
            assert status == 413
            assert await c.closes()


async def test_oversized_headers_get_431() -> None:
    async with builtin(max_header_bytes=2048) as server:
        async with connect(server.port) as c:  # many headers
            many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 50) for i in range(100))
            c.writer.write(request(invocation("svc/ECHO"), extra=many))
            [(status, _, _)] = await c.read(1)
            assert status == 431
            assert await c.closes()
        async with connect(server.port) as c:  # one header line that never ends, read by read
            c.writer.write(b"POST /actions HTTP/1.1\r\nHost: t\r\nX-Long: ")
            for _ in range(8):
                c.writer.write(b"v" * 1024)
                await c.writer.drain()
            [(status, _, _)] = await c.read(1)
            assert status == 431
            assert await c.closes()
        assert await statuses(server.port, request(invocation("svc/ECHO"))) == [200]


async def test_an_idle_connection_is_closed_and_a_slow_request_gets_408() -> None:
    async with builtin(idle_timeout_s=0.3, request_timeout_s=0.3, tick_s=0.05) as server:
        async with connect(server.port) as c:
            c.writer.write(request(invocation("svc/ECHO")))
            assert [s for s, _, _ in await c.read(1)] == [200]
            assert await c.closes(timeout=3)  # nothing more asked
        async with connect(server.port) as c:
            c.writer.write(request(invocation("svc/ECHO"))[:-5])  # the body never completes
            assert await c.closes(timeout=3)
            assert [s for s, _, _ in c.answers.got] == [408]
        await eventually(lambda: not server.conns, what="connections forgotten")


async def test_graceful_stop_answers_what_is_in_flight_then_closes() -> None:
    gates = Gates()
    service = build(gates)
    server = await service.serve("127.0.0.1", 0, ServerLimits(grace_s=5))
    port = server.port
    async with connect(port) as busy, connect(port) as idle:
        idle.writer.write(request(invocation("svc/ECHO")))
        await idle.read(1)
        busy.writer.write(request(invocation("svc/WAIT", "k")))
        await eventually(lambda: gates.entered == ["k"], what="the handler running")
        closing = asyncio.create_task(server.aclose())
        assert await idle.closes()  # idle: closed at once
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)  # no longer listening
        assert not closing.done()
        gates.event("k").set()
        [(status, body, _)] = await busy.read(1)
        assert status == 200 and b"svc/WAITED" in body
        assert await busy.closes()
        await asyncio.wait_for(closing, 5)
    assert not server.conns


async def test_asgi_lifespan_completes_and_other_scopes_are_refused() -> None:
    service = build()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await asyncio.wait_for(service({"type": "lifespan"}, inbox.get, send), 2)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    with pytest.raises(ValueError, match="serves HTTP"):
        await service({"type": "websocket"}, inbox.get, send)


async def test_http_1_0_closes_after_its_answer_and_connections_are_capped() -> None:
    async with builtin(max_connections=1) as server:
        async with connect(server.port) as c:
            c.writer.write(request(invocation("svc/ECHO")).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
            [(status, _, headers)] = await c.read(1)
            assert status == 200 and headers[b"connection"] == b"close"
            assert await c.closes()
        await eventually(lambda: not server.conns, what="the first connection forgotten")
        async with connect(server.port) as first, connect(server.port) as second:
            first.writer.write(request(invocation("svc/ECHO")))
            assert [s for s, _, _ in await first.read(1)] == [200]
            assert [s for s, _, _ in await second.read(1)] == [503]
            assert await second.closes()


async def test_requests_pipelined_after_connection_close_are_not_read() -> None:
    gates = Gates()
    async with builtin(build(gates)) as server, connect(server.port) as c:
        last = request(invocation("svc/ECHO", "last"), extra=b"Connection: close\r\n")
        after = request(invocation("svc/WAIT", "never"))
        c.writer.write(request(invocation("svc/ECHO", "first")) + last + after)
        assert await c.closes()
        assert [s for s, _, _ in c.answers.got] == [200, 200]
        assert c.answers.got[1][2][b"connection"] == b"close"
        assert gates.entered == []


def count_writes(transport: asyncio.Transport | None) -> list[int]:
    """The sizes of what the server writes from now: a ``write`` or a ``writelines``
    each count once (asyncio's ``writelines`` calls ``write``: not counted twice)."""
    assert transport is not None
    writes: list[int] = []
    real_write, real_lines = transport.write, transport.writelines
    inside = False

    def write(data: Any) -> None:
        if not inside:
            writes.append(len(data))
        real_write(data)

    def writelines(data: Any) -> None:
        nonlocal inside
        data = list(data)
        writes.append(sum(map(len, data)))
        inside = True
        try:
            real_lines(data)
        finally:
            inside = False

    transport.write = write  # type: ignore[method-assign]
    transport.writelines = writelines  # type: ignore[method-assign]
    return writes


async def test_pipelined_answers_ready_together_go_out_in_one_write() -> None:
    async with builtin() as server, connect(server.port) as c:
        c.writer.write(request(invocation("svc/ECHO", "warm")))
        await c.read(1)
        [conn] = server.conns
        writes = count_writes(conn.transport)
        c.writer.write(b"".join(request(invocation("svc/ECHO", i)) for i in range(8)))
        got = await c.read(9)
        assert [
            msgspec.json.decode(b)["reply"][0]["payload"]["got"] for _, b, _ in got[1:]
        ] == list(range(8))
        assert len(writes) <= 2, writes  # one per read of requests (8 when written one by one)
        # plain def handlers: answered in the parser, written once the read is parsed
        writes.clear()
        c.writer.write(b"".join(request(invocation("sync/ECHO", i)) for i in range(8)))
        got = await c.read(17)
        assert [msgspec.json.decode(b)["reply"][0]["payload"] for _, b, _ in got[9:]] == list(
            range(8)
        )
        assert len(writes) <= 2, writes


async def test_a_read_fed_in_slices_is_still_answered_in_one_write() -> None:
    # reads are fed to the parser in slices of max_header_bytes: 8 requests of ~250 bytes
    # span several 512-byte slices, and their (parser-made) answers still go out together
    async with builtin(max_header_bytes=512) as server, connect(server.port) as c:
        c.writer.write(request(invocation("sync/ECHO", "warm")))
        await c.read(1)
        [conn] = server.conns
        writes = count_writes(conn.transport)
        burst = b"".join(request(invocation("sync/ECHO", i)) for i in range(8))
        assert len(burst) > 3 * 512
        c.writer.write(burst)
        got = await c.read(9)
        assert [msgspec.json.decode(b)["reply"][0]["payload"] for _, b, _ in got[1:]] == list(
            range(8)
        )
        assert len(writes) == 1, writes  # (one per slice before)


async def test_plain_def_handlers_answer_without_a_task_in_order_with_coroutine_ones() -> None:
    gates = Gates()
    async with builtin(build(gates)) as server, connect(server.port) as c:
        # a coroutine handler still waiting, then plain ones (answered at once), then errors
        c.writer.write(
            request(invocation("svc/WAIT", "w"))
            + request(invocation("sync/ECHO", 1))
            + request(invocation("sync/REFUSE"))
            + request(invocation("sync/BOOM"))
            + request(invocation("sync/ECHO", 2))
        )
        await eventually(lambda: gates.entered == ["w"] and len(gates.tasks) == 2, what="ran")
        assert gates.tasks == [None, None]  # called from the parser, not in a task
        assert c.answers.got == []  # nothing overtakes the first request's answer
        gates.event("w").set()
        got = await c.read(5)
        assert [status for status, _, _ in got] == [200, 200, 403, 500, 200]
        assert [msgspec.json.decode(b) for _, b, _ in got[1:]] == [
            {"reply": [{"type": "sync/ECHOED", "payload": 1}]},
            {"error": "not you either"},
            {"error": "handler failed"},
            {"reply": [{"type": "sync/ECHOED", "payload": 2}]},
        ]
        assert not c.closed


async def test_never_awaiting_handlers_run_without_a_task_each_in_a_context_of_its_own() -> None:
    gates = Gates()
    async with builtin(build(gates)) as server, connect(server.port) as c:
        c.writer.write(
            request(invocation("eager/ECHO", 1))
            + request(invocation("sync/CONTEXT", "a"))
            + request(invocation("sync/CONTEXT", "b"))
        )
        got = await c.read(3)
        assert [msgspec.json.decode(b)["reply"][0]["payload"] for _, b, _ in got] == [1, "", ""]
        assert gates.tasks == [None]


async def test_plain_def_handlers_under_uvicorn_answer_the_same() -> None:
    gates = Gates()
    async with under_uvicorn(build(gates)) as port:
        for type_, status in (("sync/ECHO", 200), ("sync/REFUSE", 403), ("sync/BOOM", 500)):
            assert await statuses(port, request(invocation(type_, 1))) == [status]


RUN_SCRIPT = """
import sys
from wsgate import sdk
service = sdk.Service(secret=sys.argv[2])

@service.action("svc/*")
async def echo(action, ctx):
    return {"type": "svc/ECHOED"}

service.run("127.0.0.1", int(sys.argv[1]))
"""


async def test_run_serves_until_sigterm_then_exits_cleanly() -> None:
    import os
    import signal
    import sys

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_SCRIPT, str(port), SECRET,
        env={**os.environ}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:

        async def answers() -> bool:
            try:
                return await statuses(port, request(invocation("svc/X"))) == [200]
            except OSError:
                return False

        await eventually(answers, timeout=15, every=0.05, what="service.run listening")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
