"""Every map and queue of the client is bounded and freed; replays are not delivered twice."""

from __future__ import annotations

import asyncio

import pytest

from wsgate.client import Client, ClientError

from ..helpers import eventually, free_port
from .live import FAST, Seen
from .scripted import WELCOME, Conn, scripted


async def silent(conn: Conn) -> None:
    """Welcome, then answer nothing."""
    await conn.send(WELCOME)
    await conn.ws.wait_closed()


async def test_pending_requests_are_capped_and_freed_by_timeout_and_by_close() -> None:
    async with scripted(silent) as server:
        async with Client(server.url, max_pending=2, backoff=FAST) as client:
            with pytest.raises(ClientError) as err:
                await client.send("x/A", timeout_s=0.05)
            assert err.value.code == "TIMEOUT"
            assert client.pending == 0  # the timeout freed it
            a = asyncio.ensure_future(client.send("x/A", timeout_s=30))
            b = asyncio.ensure_future(client.send("x/B", timeout_s=30))
            await eventually(lambda: client.pending == 2, what="two pending")
            with pytest.raises(ClientError) as err:
                await client.send("x/C")
            assert err.value.code == "PENDING_FULL"
        for fut in (a, b):
            with pytest.raises(ClientError) as err:
                await fut
            assert err.value.code == "CLOSED"
        assert client.pending == 0 and client.queued == 0


async def test_the_offline_queue_is_capped_and_dropped_at_close() -> None:
    client = Client(f"ws://127.0.0.1:{free_port()}/ws", max_queue=2, backoff=FAST)
    await client.start()  # nothing listens: it keeps retrying
    assert await client.dispatch({"type": "x/1"})
    assert await client.dispatch({"type": "x/2"})
    assert not await client.dispatch({"type": "x/3"})
    with pytest.raises(ClientError) as err:
        await client.send("x/4")
    assert err.value.code == "QUEUE_FULL"
    assert client.queued == 2 and client.pending == 0
    await client.close()
    assert client.queued == 0 and client.state == "closed"
    assert not await client.dispatch({"type": "x/5"})


async def test_an_action_at_or_below_the_last_offset_seen_is_dropped() -> None:
    def msg(offset: int) -> dict[str, object]:
        return {"type": "chat/M", "payload": offset, "meta": {"channel": "acme:r", "offset": offset}}

    async def script(conn: Conn) -> None:
        await conn.send(WELCOME)
        join = await conn.recv()
        await conn.send({"type": "@@wsgate/JOINED", "meta": {"inReplyTo": join["meta"]["id"]},
                         "payload": {"channel": "acme:r", "count": 1, "offset": 10, "members": []}})
        for offset in (11, 12, 11, 12, 13):  # a replay overlapping what was delivered
            await conn.send(msg(offset))
        await conn.ws.wait_closed()

    seen = Seen()
    async with scripted(script) as server:
        client = Client(server.url, backoff=FAST)
        client.on("chat/*", seen)
        async with client:
            await client.join("acme:r")
            await eventually(lambda: client.offset("acme:r") == 13, what="offset 13")
            assert seen.payloads("chat/M") == [11, 12, 13]


async def test_channels_are_capped_like_the_gateways() -> None:
    async with scripted(silent) as server, Client(server.url, max_channels=1, timeout_s=30) as client:
        first = asyncio.ensure_future(client.join("acme:a"))
        await eventually(lambda: client.channels == ["acme:a"], what="one channel")
        with pytest.raises(ClientError) as err:
            await client.join("acme:b")
        assert err.value.code == "TOO_LARGE"
    with pytest.raises(ClientError) as err:
        await first
    assert err.value.code == "CLOSED"
    assert client.channels == [] and client.pending == 0


async def test_close_during_the_opening_handshake_returns_at_once() -> None:
    accepted = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()  # a TCP server that never answers the upgrade
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = Client(f"ws://127.0.0.1:{port}/ws", get_token=lambda: "t", open_timeout_s=30)
        await client.start()
        await asyncio.wait_for(accepted.wait(), 3)
        await asyncio.wait_for(client.close(), 2)  # not the 30 s of the handshake
        assert client.state == "closed"
        with pytest.raises(ClientError) as err:
            await client.wait_open(1)
        assert err.value.code == "CLOSED"
