"""The gateway's own gRPC client against real grpcio servers: streams, windows, limits, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.grpc_services.server import SERVICE, ModuleServer
from tests.helpers import eventually
from wsgate.routing.grpc_channel import Channel, GrpcCallError
from wsgate.routing.grpc_h2 import CONNECTION_WINDOW, STREAM_WINDOW, metadata_block, timeout_header

ECHO = f"/{SERVICE}/Echo"
HOLD = f"/{SERVICE}/Hold"
WATCH = f"/{SERVICE}/Watch"


@pytest.fixture
async def server() -> AsyncIterator[ModuleServer]:
    async with ModuleServer() as s:
        yield s


def meta(timeout_s: float = 5.0) -> bytes:
    return metadata_block([("wsgate-connection-id", "n1.x")]) + timeout_header(timeout_s)


def request(server: ModuleServer, name: str, **fields: Any) -> bytes:
    data: bytes = server.cls(name)(**fields).SerializeToString()
    return data


async def echo(channel: Channel, server: ModuleServer, timeout_s: float = 5.0) -> Any:
    body = request(server, "EchoRequest")
    answer = await channel.unary(ECHO, body, meta(timeout_s), timeout_s)
    return server.cls("EchoResponse").FromString(answer)


async def test_a_large_streamed_answer_passes_the_stream_and_connection_windows(
    server: ModuleServer,
) -> None:
    channel = Channel(server.target)
    try:
        count, size = 48, 100_000  # 4.8 MB: over both windows many times
        assert count * size > CONNECTION_WINDOW > STREAM_WINDOW
        stream = channel.stream(WATCH, request(server, "WatchRequest", count=count, size=size), b"")
        item = server.cls("WatchItem")
        seqs = [item.FromString(m).seq async for m in stream]
        assert seqs == list(range(count))
    finally:
        await channel.aclose()


async def test_a_reader_that_stops_stops_the_server_within_the_stream_window(
    server: ModuleServer,
) -> None:
    channel = Channel(server.target)
    try:
        size = 20_000
        body = request(server, "WatchRequest", count=1000, size=size)
        stream = channel.stream(WATCH, body, b"")
        await stream.__anext__()
        await eventually(lambda: server.sent > 0)
        # grpcio has its own buffers: it "sends" some more before its window is gone.
        for _ in range(3):  # the count stays put over three checks of 0.2 s
            before = server.sent
            await asyncio.sleep(0.2)  # (a window of time in which nothing may happen)
            if server.sent == before:
                break
        assert server.sent < 1000 and server.sent * size < 4 * STREAM_WINDOW + 4 * size
        assert len(stream._queue) * size <= STREAM_WINDOW + size
        stream.cancel()  # (grpcio's blocked write then fails, its handler ends)
        await eventually(lambda: server.watching == 0, what="the server's handler ends")
    finally:
        await channel.aclose()


async def test_an_answer_over_the_limit_is_resource_exhausted_and_the_channel_goes_on(
    server: ModuleServer,
) -> None:
    channel = Channel(server.target, max_message=50_000)
    try:
        body = request(server, "WatchRequest", count=2, size=60_000)
        with pytest.raises(GrpcCallError) as caught:
            async for _ in channel.stream(WATCH, body, b""):
                pass
        assert caught.value.status == "RESOURCE_EXHAUSTED"
        assert (await echo(channel, server)).metadata["wsgate-connection-id"] == "n1.x"
    finally:
        await channel.aclose()


async def test_a_request_over_the_limit_is_refused_before_the_server_sees_it(
    server: ModuleServer,
) -> None:
    channel = Channel(server.target, max_message=100)
    try:
        body = request(server, "HoldRequest", tag="t" * 200)
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary(HOLD, body, meta(), 5.0)
        assert caught.value.status == "RESOURCE_EXHAUSTED" and server.calls == 0
    finally:
        await channel.aclose()


async def test_the_deadline_ends_the_call_and_the_server_sees_it_cancelled(
    server: ModuleServer,
) -> None:
    channel = Channel(server.target)
    try:
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary(HOLD, request(server, "HoldRequest"), meta(0.3), 0.3)
        assert caught.value.status == "DEADLINE_EXCEEDED"
        await eventually(lambda: server.cancelled == 1, what="the server's cancellation")
    finally:
        await channel.aclose()


async def test_each_call_ends_at_its_own_local_deadline_on_one_connection_timer(
    server: ModuleServer,
) -> None:
    """The connection's one timer: a later call with an earlier deadline re-arms it, calls
    due together end together, the others keep waiting, and the connection stays up."""
    channel = Channel(server.target)
    loop = asyncio.get_running_loop()
    try:
        await echo(channel, server)  # connected
        body = request(server, "HoldRequest")
        started = loop.time()
        ended: dict[str, float] = {}

        async def hold(name: str, timeout_s: float) -> str:
            try:  # the server is told 60 s: only the gateway's own deadline ends these
                await channel.unary(HOLD, body, meta(60.0), timeout_s)
            except GrpcCallError as exc:
                ended[name] = loop.time() - started
                return exc.status
            return "OK"

        names = {"long": 1.2, "short-a": 0.3, "short-b": 0.3, "mid": 0.6}
        statuses = await asyncio.gather(*(hold(n, t) for n, t in names.items()))
        assert statuses == ["DEADLINE_EXCEEDED"] * 4
        assert sorted(ended, key=ended.__getitem__)[-2:] == ["mid", "long"]
        for name, timeout_s in names.items():
            assert timeout_s - 0.01 <= ended[name] < timeout_s + 0.25, (name, ended)
        assert (await echo(channel, server)) is not None  # the same connection still serves
        await eventually(lambda: server.cancelled == 4, what="the server's cancellations")
    finally:
        await channel.aclose()


async def test_calls_beyond_the_servers_max_concurrent_streams_wait_for_a_stream() -> None:
    async with ModuleServer(options=(("grpc.max_concurrent_streams", 2),)) as server:
        channel = Channel(server.target)
        try:
            await echo(channel, server)  # connected, the server's SETTINGS known
            body = request(server, "HoldRequest", tag="h")
            calls = [
                asyncio.ensure_future(channel.unary(HOLD, body, meta(), 5.0)) for _ in range(6)
            ]
            await eventually(lambda: server.holding == 2, what="two calls held")
            server.gate.set()
            answers = await asyncio.gather(*calls)
            assert len(answers) == 6 and server.max_holding == 2
        finally:
            await channel.aclose()


async def test_goaway_lets_the_call_in_flight_finish_then_a_restarted_server_is_reached() -> None:
    server = ModuleServer()
    await server.start()
    port = server.port
    channel = Channel(server.target)
    try:
        await echo(channel, server)
        held = asyncio.ensure_future(
            channel.unary(HOLD, request(server, "HoldRequest", tag="g"), meta(), 5.0)
        )
        await eventually(lambda: server.holding == 1)
        stopping = asyncio.ensure_future(server.stop(grace=5.0))  # GOAWAY, then grace
        await eventually(lambda: channel._conn is None or not channel._conn.h2.usable,
                         what="GOAWAY seen")
        server.gate.set()
        answer = server.cls("HoldResponse").FromString(await held)
        assert answer.tag == "g"
        await stopping
        with pytest.raises(GrpcCallError) as caught:
            await echo(channel, server)
        assert caught.value.status == "UNAVAILABLE"
        restarted = ModuleServer(port)
        await restarted.start()
        try:

            async def answered() -> bool:
                try:
                    await echo(channel, restarted, 1.0)
                except GrpcCallError:
                    return False
                return True

            await eventually(answered, timeout=5.0, what="a call to the restarted server")
        finally:
            await restarted.stop()
    finally:
        await channel.aclose()
        await server.stop()


async def test_a_server_that_goes_away_fails_calls_in_flight_unavailable(
    server: ModuleServer,
) -> None:
    channel = Channel(server.target)
    try:
        held = asyncio.ensure_future(
            channel.unary(HOLD, request(server, "HoldRequest"), meta(), 5.0)
        )
        await eventually(lambda: server.holding == 1)
        assert channel._conn is not None and channel._conn.transport is not None
        channel._conn.transport.abort()  # the connection is lost under the call
        with pytest.raises(GrpcCallError) as caught:
            await held
        assert caught.value.status == "UNAVAILABLE"
        assert (await echo(channel, server)).metadata["wsgate-connection-id"] == "n1.x"
    finally:
        await channel.aclose()


async def test_nobody_listening_is_unavailable_at_once_and_backs_off() -> None:
    from tests.helpers import free_port

    channel = Channel(f"127.0.0.1:{free_port()}")
    try:
        for _ in range(2):  # the second during the back-off
            with pytest.raises(GrpcCallError) as caught:
                await channel.unary(ECHO, b"", meta(), 2.0)
            assert caught.value.status == "UNAVAILABLE"
        assert "back-off" in caught.value.details
    finally:
        await channel.aclose()
