"""HTTP/1.1 pipelining and write coalescing in the invoker's client (:mod:`wsgate.routing.http1`).

Against a loopback server whose answers each test scripts byte for byte: it
records every connection, the requests of each read and how many requests a
connection carries unanswered. The answers echo the caller's request id
(``X-Wsgate-Request-Id: r3`` is answered ``t/r3``), so a caller that got
another's answer shows.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually as until
from tests.routing.test_routing_http1 import action
from wsgate.config import load
from wsgate.exceptions import ConfigError
from wsgate.protocol.codes import ErrorCode
from wsgate.routing import HttpInvoker, InvocationContext, InvocationResult, RouteTable, Service
from wsgate.routing.http1 import Http1Client, HttpError
from wsgate.routing.http1_conn import Conn, Pending

WAIT_S = 5.0
"""Bound on any wait of a test."""


def body(rid: str) -> bytes:
    return b'{"reply":[{"type":"t/%s"}]}' % rid.encode()


def answer(rid: str, *, extra: bytes = b"") -> bytes:
    """A ``Content-Length`` answer for request ``rid``."""
    data = body(rid)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(data), extra, data)


def chunked(rid: str) -> bytes:
    """A chunked answer for request ``rid``: three chunks, an extension, a trailer."""
    data = body(rid)
    parts = (data[:3], data[3:10], data[10:])
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    out += b"%x;ext=1\r\n%s\r\n" % (len(parts[0]), parts[0])
    out += b"".join(b"%X\r\n%s\r\n" % (len(p), p) for p in parts[1:])
    return out + b"0\r\nX-Trailer: 1\r\n\r\n"


Script = Callable[["Peer", int, str], None]
"""(connection, request number on it, request id): react to a request."""


class Peer(asyncio.Protocol):
    """One connection of a :class:`Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.number = 0
        self.count = 0
        """Requests received."""
        self.buf = b""
        self.reads: list[int] = []
        """Requests completed by each read (``data_received``)."""
        self.unanswered: deque[str] = deque()
        """Request ids not answered yet, oldest first."""
        self.most = 0
        """Most requests this connection carried unanswered at once."""
        self.transport: asyncio.Transport | None = None
        self.lost = False
        """The connection is closed (``connection_lost`` ran)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.peers.append(self)
        self.number = len(self.server.peers)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        got: list[tuple[int, str]] = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = self.buf[:end].decode().split("\r\n")
            fields = {k.lower(): v.strip() for k, _, v in (li.partition(":") for li in lines[1:])}
            length = int(fields["content-length"])
            if len(self.buf) < end + 4 + length:
                break
            self.buf = self.buf[end + 4 + length :]
            self.count += 1
            rid = fields.get("x-wsgate-request-id", "")
            self.unanswered.append(rid)
            self.most = max(self.most, len(self.unanswered))
            self.server.requests.append((self.number, self.count, rid))
            got.append((self.count, rid))
        self.reads.append(len(got))
        for n, rid in got:
            self.server.script(self, n, rid)

    def send(self, data: bytes, answers: int = 1) -> None:
        """Write ``data``, which answers the ``answers`` oldest requests."""
        for _ in range(answers):
            self.unanswered.popleft()
        assert self.transport is not None
        self.transport.write(data)

    def answer_oldest(self) -> None:
        if self.unanswered and self.transport is not None and not self.transport.is_closing():
            self.send(answer(self.unanswered[0]))

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


class Server:
    """A loopback HTTP/1.1 server driven by a :data:`Script`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.peers: list[Peer] = []
        self.requests: list[tuple[int, int, str]] = []
        """(connection number, request number on it, request id) of every request."""
        self.server: asyncio.Server | None = None
        self.timers: list[asyncio.TimerHandle] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    @property
    def connections(self) -> int:
        return len(self.peers)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.append(asyncio.get_running_loop().call_later(delay, fn))

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Peer(self), "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/actions"
        return self

    def stop(self) -> None:
        for timer in self.timers:
            timer.cancel()
        for task in self.tasks:
            task.cancel()
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.abort()
        if self.server is not None:
            self.server.close()


class CountingTransport:
    """Wraps a :class:`Conn`'s transport: records the requests of each write."""

    def __init__(self, inner: asyncio.Transport, writes: list[int]) -> None:
        self.inner = inner
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(data.count(b"POST /actions HTTP/1.1\r\n"))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def client_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The requests of each ``transport.write`` of the client, all connections."""
    writes: list[int] = []
    original = Conn.connection_made

    def made(self: Conn, transport: asyncio.BaseTransport) -> None:
        original(self, transport)
        assert self.transport is not None
        self.transport = CountingTransport(self.transport, writes)  # type: ignore[assignment]

    monkeypatch.setattr(Conn, "connection_made", made)
    return writes


def echo(peer: Peer, n: int, rid: str) -> None:
    peer.send(answer(rid))


@pytest.fixture
async def serve_raw() -> AsyncIterator[Callable[[Script], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(script: Script) -> Server:
        server = Server(script)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        server.stop()
    await until(lambda: all(peer.lost for server in servers for peer in server.peers),
                what="every server connection closed")


@pytest.fixture
async def invoker() -> AsyncIterator[HttpInvoker]:
    inv = HttpInvoker()
    yield inv
    await inv.aclose()


def make_service(clock: Any, url: str, *, pipeline: int = 1, timeout_ms: int = 2000) -> Service:
    table = RouteTable(clock=clock)
    table.add_service("svc", url, timeout_ms=timeout_ms, pipeline=pipeline)
    table.add_route("svc/*", "svc")
    service = table.lookup("svc/GET")
    assert service is not None and service.pool.pipeline == pipeline
    return service


def ctx(rid: str) -> InvocationContext:
    return InvocationContext(connectionId="n1.Zk3", requestId=rid)


Outcome = str | ErrorCode
"""The reply type a caller got (``t/r1``), or its error code."""


def outcome(result: InvocationResult | ErrorCode) -> Outcome:
    if isinstance(result, ErrorCode):
        return result
    assert len(result.replies) == 1, result
    return result.replies[0].type


def start(invoker: HttpInvoker, service: Service, rids: Sequence[str]) -> list[asyncio.Future[Any]]:
    """Start one call per request id through :meth:`HttpInvoker.start`, in this iteration."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = []
    for rid in rids:
        fut: asyncio.Future[Any] = loop.create_future()
        invoker.start(service, action(), ctx(rid), fut.set_result)
        futures.append(fut)
    return futures


async def outcomes(futures: Sequence[Awaitable[InvocationResult | ErrorCode]]) -> list[Outcome]:
    async with asyncio.timeout(WAIT_S):
        return [outcome(r) for r in await asyncio.gather(*futures)]


async def invoke_all(invoker: HttpInvoker, service: Service, rids: Sequence[str]) -> list[Outcome]:
    """Concurrent :meth:`HttpInvoker.invoke` calls, one per request id."""
    return await outcomes([invoker.invoke(service, action(), ctx(rid)) for rid in rids])


async def warm(invoker: HttpInvoker, service: Service, server: Server) -> None:
    """One call, so that the pool has an idle connection (a cold pool connects per call)."""
    assert await outcomes(start(invoker, service, ["r0"])) == ["t/r0"]
    assert invoker.connections(server.url) == (1, 1)


RIDS = ["r1", "r2", "r3", "r4"]


# Write coalescing and connection choice ---------------------------------------


async def test_calls_of_one_iteration_travel_together_on_one_connection(
    serve_raw: Any, invoker: HttpInvoker, clock: Any, client_writes: list[int]
) -> None:
    server = await serve_raw(echo)
    service = make_service(clock, server.url, pipeline=4)
    await warm(invoker, service, server)
    assert await outcomes(start(invoker, service, RIDS)) == [f"t/{r}" for r in RIDS]
    assert client_writes == [1, 4]  # the warm-up, then the four requests in one write
    assert server.connections == 1
    peer = server.peers[0]
    assert peer.reads == [1, 4]  # and in one read
    assert [rid for _, _, rid in server.requests] == ["r0", *RIDS]
    assert peer.most == 4
    assert invoker.connections(server.url) == (1, 1)


async def test_gathered_invokes_are_pipelined_and_answered_in_order(
    serve_raw: Any, invoker: HttpInvoker, clock: Any, client_writes: list[int]
) -> None:
    server = await serve_raw(echo)
    service = make_service(clock, server.url, pipeline=8)
    await warm(invoker, service, server)
    rids = [f"r{i}" for i in range(1, 7)]
    for _ in range(3):
        assert await invoke_all(invoker, service, rids) == [f"t/{r}" for r in rids]
    assert server.connections == 1
    assert client_writes == [1, 6, 6, 6]
    assert server.peers[0].reads == [1, 6, 6, 6]
    assert len(server.requests) == 19


async def test_without_pipelining_each_call_in_flight_has_its_own_connection(
    serve_raw: Any, invoker: HttpInvoker, clock: Any, client_writes: list[int]
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        server.later(0.02, peer.answer_oldest)  # keep the calls in flight together

    server = await serve_raw(script)
    service = make_service(clock, server.url)  # pipeline = 1
    await warm(invoker, service, server)
    assert await outcomes(start(invoker, service, RIDS)) == [f"t/{r}" for r in RIDS]
    assert server.connections == 4
    assert await invoke_all(invoker, service, RIDS) == [f"t/{r}" for r in RIDS]
    assert server.connections == 4  # the second wave reused them
    assert all(peer.most == 1 for peer in server.peers)
    assert client_writes == [1] * 9
    assert len(server.requests) == 9
    assert invoker.connections(server.url) == (4, 4)


# Answers in one write or in pieces ----------------------------------------------


def mixed_answers(rids: Sequence[str]) -> bytes:
    """Answers for ``rids``: by length, chunked, after an interim ``100``, with keep-alive."""
    forms: list[Callable[[str], bytes]] = [
        answer,
        chunked,
        lambda rid: b"HTTP/1.1 100 Continue\r\n\r\n" + answer(rid),
        lambda rid: answer(rid, extra=b"Connection: keep-alive\r\nX-A: b\r\n"),
    ]
    return b"".join(forms[i % len(forms)](rid) for i, rid in enumerate(rids))


@pytest.mark.parametrize("piece", [0, 1, 7, 40], ids=["one-write", "bytes", "7", "40"])
async def test_answers_in_one_write_or_in_pieces_reach_their_callers(
    serve_raw: Any,
    invoker: HttpInvoker,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    piece: int,
) -> None:
    rids = [f"r{i}" for i in range(1, 9)]

    async def trickle(peer: Peer, data: bytes) -> None:
        for i in range(0, len(data), piece):
            peer.send(data[i : i + piece], answers=0)
            await asyncio.sleep(0)  # the behaviour: the client reads this piece alone
            await asyncio.sleep(0)

    def script(peer: Peer, n: int, rid: str) -> None:
        if n == 1:
            peer.send(answer(rid))
        elif len(peer.unanswered) == len(rids):  # all asked: answer them all at once
            data = mixed_answers(list(peer.unanswered))
            peer.unanswered.clear()
            if piece:
                server.spawn(trickle(peer, data))
            else:
                peer.send(data, answers=0)

    reads: list[int] = []
    original = Conn.data_received

    def counting(self: Conn, data: bytes) -> None:
        reads.append(len(data))
        original(self, data)

    monkeypatch.setattr(Conn, "data_received", counting)
    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=len(rids))
    await warm(invoker, service, server)
    reads.clear()
    assert await outcomes(start(invoker, service, rids)) == [f"t/{r}" for r in rids]
    assert server.connections == 1 and server.peers[0].reads == [1, len(rids)]
    total = len(mixed_answers(rids))
    assert sum(reads) == total
    if piece == 0:
        assert len(reads) == 1
    else:  # the answers really came split at (at least most of) the piece boundaries
        assert len(reads) > total // piece // 2
    assert invoker.connections(server.url) == (1, 1)


async def test_parser_matches_answers_split_at_any_byte() -> None:
    """Every split of the answers into 2 pieces, and 300 random splits into many."""
    rids = ["r1", "r2", "r3", "r4", "r5"]
    data = mixed_answers(rids[:4]) + b"HTTP/1.1 204 No Content\r\n\r\n" + chunked(rids[4])
    expected = [(200, body(r), None) for r in rids[:4]]
    expected += [(204, b"", None), (200, body(rids[4]), None)]
    client = Http1Client()
    pool = client.pool("http://127.0.0.1:9/actions")
    loop = asyncio.get_running_loop()

    class Transport:
        closing = False

        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return self.closing

        def close(self) -> None:
            self.closing = True

        abort = close

    got: list[tuple[int, bytes | None, HttpError | None]] = []

    class Call(Pending):
        def answer(self, status: int, body: bytes | None, exc: HttpError | None) -> None:
            got.append((status, body, exc))

    def feed(pieces: list[bytes]) -> list[tuple[int, bytes | None, HttpError | None]]:
        got.clear()
        conn = Conn(pool)
        conn.connection_made(Transport())  # type: ignore[arg-type]
        for _ in expected:
            call = Call()
            call.deadline = loop.time() + 60
            conn.queue(b"request", call)
        for p in pieces:
            conn.data_received(p)
        assert conn.usable() and not conn.calls  # idle, ready for more
        conn.drop(HttpError, "done")
        return list(got)

    try:
        for cut in range(len(data) + 1):
            assert feed([data[:cut], data[cut:]]) == expected, cut
        assert feed([data[i : i + 1] for i in range(len(data))]) == expected
        rng = random.Random(1)
        for _ in range(300):
            cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 30)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            assert feed(pieces) == expected, cuts
    finally:
        await client.aclose()


# The depth cap -------------------------------------------------------------------


async def test_no_connection_carries_more_than_pipeline_unanswered_requests(
    serve_raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        server.later(0.03, peer.answer_oldest)  # lazily, oldest first

    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=2)
    await warm(invoker, service, server)
    rids = [f"r{i}" for i in range(1, 6)]
    for _ in range(2):
        assert await outcomes(start(invoker, service, rids)) == [f"t/{r}" for r in rids]
        assert await invoke_all(invoker, service, rids) == [f"t/{r}" for r in rids]
    assert max(peer.most for peer in server.peers) == 2
    assert len(server.requests) == 21
    assert server.connections <= 5


async def test_depth_cap_holds_for_a_connection_being_opened(
    serve_raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        server.later(0.1, peer.answer_oldest)

    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=2)
    await warm(invoker, service, server)
    futures = start(invoker, service, ["r1", "r2", "r3"])  # r3: no room, opens a connection
    # until it is open (polled tightly: r1's answer comes 0.1 s after it was sent)
    await until(lambda: invoker.connections(server.url)[0] >= 2, WAIT_S, every=0.001, what="B open")
    futures += start(invoker, service, ["r4", "r5"])  # these find it open, with room
    assert await outcomes(futures) == ["t/r1", "t/r2", "t/r3", "t/r4", "t/r5"]
    # B holds r3's place while it opens: r4 joins r3 there, r5 finds no room and opens C
    assert [peer.most for peer in server.peers] == [2, 2, 1]


# Failures on a pipelined connection -----------------------------------------------


async def test_a_timeout_of_the_oldest_call_fails_every_call_on_the_connection(
    serve_raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    server = await serve_raw(lambda peer, n, rid: peer.send(answer(rid)) if n == 1 else None)
    service = make_service(clock, server.url, pipeline=3, timeout_ms=600)
    await warm(invoker, service, server)
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}

    def call(rid: str) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: InvocationResult | ErrorCode) -> None:
            ended[rid] = loop.time()
            fut.set_result(result)

        invoker.start(service, action(), ctx(rid), done)
        return fut

    first = call("r1")
    await asyncio.sleep(0.2)  # the behaviour: r1 ages, so the calls behind it fail before their deadline
    began = loop.time()
    behind = [call("r2"), call("r3")]  # on the same connection, 0.2 s of budget left over
    timeout = ErrorCode.UPSTREAM_TIMEOUT
    assert await outcomes([first, *behind]) == [timeout, timeout, timeout]
    assert server.connections == 1 and [rid for _, _, rid in server.requests] == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]
    assert max(ended.values()) - min(ended.values()) < 0.05  # failed together,
    assert ended["r2"] - began < 0.55  # before their own deadline
    await until(lambda: invoker.connections(server.url) == (0, 0))


@pytest.mark.parametrize("server_closes", [True, False], ids=["server-closes", "client-closes"])
@pytest.mark.parametrize("how", ["start", "invoke"])
async def test_calls_behind_a_connection_close_answer_are_sent_again(
    serve_raw: Any, invoker: HttpInvoker, clock: Any, server_closes: bool, how: str
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        if peer.number == 1 and n == 2:
            peer.send(answer(rid, extra=b"Connection: close\r\n"))
            if server_closes:
                peer.close()
        elif peer.number == 1 and n > 2:
            pass  # after announcing the close: not processed
        else:
            peer.send(answer(rid))

    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=3)
    await warm(invoker, service, server)
    rids = ["r1", "r2", "r3"]
    if how == "start":
        got = await outcomes(start(invoker, service, rids))
    else:
        got = await invoke_all(invoker, service, rids)
    assert got == ["t/r1", "t/r2", "t/r3"]
    first = [rid for conn, _, rid in server.requests if conn == 1]
    again = [rid for conn, _, rid in server.requests if conn != 1]
    assert first == ["r0", "r1", "r2", "r3"]  # all three travelled on the first connection
    assert sorted(again) == ["r2", "r3"]  # the unprocessed two, once more each
    assert server.connections >= 2
    assert service.instances[0].healthy(clock())


async def test_close_after_some_answers_fails_the_rest_without_sending_them_again(
    serve_raw: Any, invoker: HttpInvoker, clock: Any
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        if n <= 2:
            peer.send(answer(rid))
        if n == 2:
            peer.close()  # unannounced: r2 and r3 may have been processed

    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=3)
    await warm(invoker, service, server)
    error = ErrorCode.UPSTREAM_ERROR
    assert await outcomes(start(invoker, service, ["r1", "r2", "r3"])) == ["t/r1", error, error]
    assert [rid for _, _, rid in server.requests] == ["r0", "r1", "r2", "r3"]  # no resend
    assert server.connections == 1
    await until(lambda: invoker.connections(server.url) == (0, 0))


@pytest.mark.parametrize("good_first", [False, True])
async def test_garbage_answer_fails_every_call_on_the_connection(
    serve_raw: Any, invoker: HttpInvoker, clock: Any, good_first: bool
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        if n == 1 or (good_first and n == 2):
            peer.send(answer(rid))
        elif n == (3 if good_first else 2):
            peer.send(b"garbage\r\n\r\n" + answer(rid))

    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=3)
    await warm(invoker, service, server)
    error = ErrorCode.UPSTREAM_ERROR
    expected: list[Outcome] = ["t/r1", error, error] if good_first else [error, error, error]
    assert await outcomes(start(invoker, service, ["r1", "r2", "r3"])) == expected
    assert len(server.requests) == 4 and server.connections == 1  # no resend
    await until(lambda: invoker.connections(server.url) == (0, 0))


@pytest.mark.parametrize("together", [True, False], ids=["same-write", "later"])
async def test_an_answer_nobody_asked_for_drops_the_connection(
    serve_raw: Any, invoker: HttpInvoker, clock: Any, together: bool
) -> None:
    def script(peer: Peer, n: int, rid: str) -> None:
        if peer.number == 1 and n == 2:
            extra = answer("extra")
            if together:
                peer.send(answer(rid) + extra)
            else:
                peer.send(answer(rid))
                server.later(0.05, lambda: peer.send(extra, answers=0))
        else:
            peer.send(answer(rid))

    server = await serve_raw(script)
    service = make_service(clock, server.url, pipeline=4)
    await warm(invoker, service, server)
    assert await outcomes(start(invoker, service, ["r1"])) == ["t/r1"]  # delivered
    await until(lambda: invoker.connections(server.url) == (0, 0))  # then dropped
    for rid in ("r2", "r3"):  # one after the other: the second reuses the new connection
        assert await invoke_all(invoker, service, [rid]) == [f"t/{rid}"]
    assert server.connections == 2
    assert [rid for conn, _, rid in server.requests if conn == 1] == ["r0", "r1"]


# Configuration ---------------------------------------------------------------------


def write_config(tmp_path: Path, pipeline: object | None) -> Path:
    path = tmp_path / "wsgate.toml"
    setting = "" if pipeline is None else f"pipeline = {pipeline}\n"
    path.write_text(
        f'[services.x]\nurl = "http://127.0.0.1:9/actions"\n{setting}\n'
        '[[routes]]\nmatch = "x/*"\nservice = "x"\n'
    )
    return path


@pytest.mark.parametrize(("pipeline", "expected"), [(16, 16), (64, 64), (None, 1)])
def test_config_pipeline_reaches_the_service_pool(
    tmp_path: Path, pipeline: int | None, expected: int
) -> None:
    config = load(write_config(tmp_path, pipeline), env={})
    assert config.services["x"].pipeline == expected
    service = RouteTable.from_config(config).lookup("x/GET")
    assert service is not None and service.pool.pipeline == expected


@pytest.mark.parametrize(
    ("pipeline", "why"),
    [(0, ">= 1"), (65, "<= 64"), (-1, ">= 1"), ('"4"', "got `str`")],
)
def test_config_refuses_a_pipeline_out_of_range(tmp_path: Path, pipeline: object, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write_config(tmp_path, pipeline), env={})
    assert info.value.key == "services.x.pipeline"
    assert "pipeline" in str(info.value) and why in str(info.value)


async def test_a_fresh_connection_closed_before_its_opener_queues_is_not_used(
    serve_raw: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opener finds its new connection already closed: nothing was sent, so the call
    fails over like a refused connection (one instance: UPSTREAM_UNAVAILABLE) at once,
    instead of waiting forever on a dead connection; the next call goes through."""
    from wsgate.routing.http1 import Pool

    server = await serve_raw(echo)
    service = make_service(clock, server.url, pipeline=4)
    real = Pool._connect
    dropped: list[bool] = []

    async def connect_then_lose_it(self: Pool, deadline: float) -> Conn:
        conn = await real(self, deadline)
        if not dropped:  # the first one closes before its opener queues on it
            dropped.append(True)
            conn.drop(HttpError, "closed by the peer")
        return conn

    monkeypatch.setattr(Pool, "_connect", connect_then_lose_it)
    invoker = HttpInvoker()
    try:
        async with asyncio.timeout(1):  # well under the call's 2 s timeout
            first = await invoker.invoke(service, action(), ctx("r1"))
            second = await invoker.invoke(service, action(), ctx("r2"))
    finally:
        await invoker.aclose()
    assert dropped == [True]
    assert first == ErrorCode.UPSTREAM_UNAVAILABLE
    assert isinstance(second, InvocationResult) and second.replies[0].type == "t/r2"
