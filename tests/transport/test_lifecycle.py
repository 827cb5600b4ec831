"""Listener lifecycle: drain with 1012, close stops accepting; TLS (wss://)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.certs import self_signed
from tests.transport.conftest import Start
from tests.transport.helpers import COOKIE, RecordingHandler


async def test_drain_closes_every_connection_with_1012(start: Start) -> None:
    listener, handler = await start()
    uri = f"ws://127.0.0.1:{listener.port}/ws"
    headers = {"Cookie": COOKIE}
    async with (
        connect(uri, additional_headers=headers, open_timeout=5) as a,
        connect(uri, additional_headers=headers, open_timeout=5) as b,
    ):
        sessions = await handler.wait_sessions(2)
        assert listener.connection_count == 2
        sessions[0].sink.send(b"last words")
        t0 = time.monotonic()
        await listener.drain(1012, "restart")
        assert time.monotonic() - t0 < 2.0  # the clients answered; no grace wait
        assert listener.connection_count == 0
        assert await a.recv() == "last words"  # flushed before the close
        for ws in (a, b):
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
            assert info.value.rcvd.reason == "restart"
    assert [s.closes for s in sessions] == [[1012], [1012]]
    with pytest.raises(OSError):
        async with asyncio.timeout(5):
            await asyncio.open_connection("127.0.0.1", listener.port)


async def test_close_stops_accepting_but_keeps_connections(start: Start) -> None:
    listener, _handler = await start(handler=RecordingHandler(echo=True))
    port = listener.port
    async with connect(
        f"ws://127.0.0.1:{port}/ws", additional_headers={"Cookie": COOKIE}, open_timeout=5
    ) as ws:
        await listener.close()
        with pytest.raises(OSError):
            async with asyncio.timeout(5):
                await asyncio.open_connection("127.0.0.1", port)
        await ws.send("still open")
        async with asyncio.timeout(5):
            assert await ws.recv() == "still open"
        assert listener.connection_count == 1


async def test_tls_from_config(start: Start, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    listener, handler = await start(
        handler=RecordingHandler(echo=True), tls_cert=str(cert), tls_key=str(key)
    )
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with connect(
        f"wss://127.0.0.1:{listener.port}/ws",
        ssl=client_ctx,
        additional_headers={"Cookie": COOKIE},
        open_timeout=5,
    ) as ws:
        payload = json.dumps({"type": "x", "payload": "é" * 5000})
        for _ in range(3):
            await ws.send(payload)
        async with asyncio.timeout(5):
            for _ in range(3):
                assert await ws.recv() == payload
    (session,) = await handler.wait_sessions(1)
    async with asyncio.timeout(5):
        await session.closed.wait()
    assert session.closes == [1000]
    # Plain ws:// on the TLS port does not get a WebSocket.
    with pytest.raises(Exception):  # noqa: B017 - any handshake failure
        async with connect(
            f"ws://127.0.0.1:{listener.port}/ws",
            additional_headers={"Cookie": COOKIE},
            open_timeout=2,
        ):
            pass
