"""Token plumbing: Bearer header, AUTH first, get_token per connection, REFRESH.

The node has no SESSION_EXPIRING yet (issue 12 item 3): a scripted server
plays that part, as docs/client.md says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from wsgate.client import Client, ClientError

from ..helpers import eventually
from .live import FAST, Seen
from .scripted import WELCOME, Conn, scripted


def tokens() -> Iterator[str]:
    for n in range(1, 100):
        yield f"t{n}"


async def test_a_token_goes_in_the_bearer_header_and_get_token_is_asked_per_connection() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(WELCOME)
        if conn.headers.get("authorization") == "Bearer t1":
            await conn.ws.close(1012, "restart")  # the first connection: come back
            return
        await conn.ws.wait_closed()

    source = tokens()
    async with scripted(script) as server:
        async with Client(server.url, get_token=lambda: next(source), backoff=FAST) as client:
            await eventually(lambda: len(server.conns) == 2 and client.state == "open",
                             what="the reconnect")
        assert [c.headers.get("authorization") for c in server.conns] == ["Bearer t1", "Bearer t2"]


async def test_with_token_in_auth_the_first_frame_is_auth_and_nothing_goes_before_welcome() -> None:
    async def script(conn: Conn) -> None:
        first = await conn.recv()
        assert first == {"type": "@@wsgate/AUTH", "payload": {"token": "secret"}}
        await conn.send(WELCOME)
        await conn.recv()  # the join waiting for WELCOME
        await conn.recv()  # the action queued before WELCOME
        await conn.ws.wait_closed()

    async with scripted(script) as server:
        client = Client(server.url, token="secret", token_in="auth", backoff=FAST)
        await client.start()
        joining = asyncio.ensure_future(client.join("acme:r"))  # before WELCOME: waits
        queued = await client.dispatch({"type": "x/EARLY"})  # before WELCOME: queued
        assert queued
        await client.wait_open(3)
        await eventually(lambda: len(server.conns[0].received) == 3, what="the early actions")
        # AUTH first; then the joins, then the queue: a queued relay finds its channel joined
        assert [a["type"] for a in server.conns[0].received] == [
            "@@wsgate/AUTH", "@@wsgate/JOIN", "x/EARLY"]
        assert "authorization" not in server.conns[0].headers
        await client.close()
        with pytest.raises(ClientError):
            await joining  # never answered: failed by the close


async def test_session_expiring_is_answered_with_refresh_and_a_fresh_token() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(WELCOME)
        await conn.send({"type": "@@wsgate/SESSION_EXPIRING", "payload": {"exp": 1234}})
        await conn.recv()
        await conn.ws.wait_closed()

    calls: list[str] = []

    async def get_token() -> str:
        # a coroutine function works as well as a plain one
        calls.append(f"t{len(calls) + 1}")
        return calls[-1]

    warned = Seen()
    async with scripted(script) as server:
        client = Client(server.url, get_token=get_token)
        client.on("session_expiring", warned)
        await client.start()
        await client.wait_open(3)
        await eventually(lambda: len(server.conns[0].received) == 1, what="the REFRESH")
        assert server.conns[0].received == [{"type": "@@wsgate/REFRESH", "payload": {"token": "t2"}}]
        assert server.conns[0].headers["authorization"] == "Bearer t1"
        assert warned.actions == [{"exp": 1234}]
        assert client.state == "open"
        await client.close()


async def test_4401_stops_the_client_with_the_sign_in_url() -> None:
    async def script(conn: Conn) -> None:
        await conn.send({"type": "@@wsgate/ERROR", "error": True,
                         "payload": {"code": "UNAUTHENTICATED", "message": "no",
                                     "signInUrl": "https://app.test/sign-in"}})
        await conn.ws.close(4401, "unauthenticated")

    unauth, closes = Seen(), Seen()
    async with scripted(script) as server:
        client = Client(server.url, token="bad", backoff=FAST)
        client.on("unauthenticated", unauth)
        client.on("close", closes)
        await client.start()
        await eventually(lambda: client.state == "closed", what="the client stops")
        assert unauth.actions == [{"signInUrl": "https://app.test/sign-in"}]
        assert client.close_code == 4401
        assert closes.actions[-1]["willReconnect"] is False
        assert len(server.conns) == 1  # never reconnected


async def test_with_a_cookie_refresh_sends_refresh_with_no_token() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(WELCOME)
        await conn.recv()
        await conn.ws.wait_closed()

    async with scripted(script) as server, Client(server.url, cookie="s=1") as client:
        assert await client.refresh()
        await eventually(lambda: len(server.conns[0].received) == 1, what="the REFRESH")
        assert server.conns[0].received == [{"type": "@@wsgate/REFRESH", "payload": {}}]
        assert server.conns[0].headers["cookie"] == "s=1"


async def test_4429_waits_the_retry_after_of_the_error_before_it() -> None:
    async def script(conn: Conn) -> None:
        if len(server.conns) == 1:
            await conn.send({"type": "@@wsgate/ERROR", "error": True,
                             "payload": {"code": "RATE_LIMITED", "message": "too many",
                                         "retryAfterMs": 400}})
            await conn.ws.close(4429, "too many")
            return
        await conn.send(WELCOME)
        await conn.ws.wait_closed()

    closes = Seen()
    async with scripted(script) as server:
        client = Client(server.url, token="t", backoff=FAST)  # later_ms 200 < retryAfterMs
        client.on("close", closes)
        await client.start()
        await client.wait_open(5)
        first = closes.actions[0]
        assert first["code"] == 4429 and first["willReconnect"] is True
        assert 410 <= first["delayMs"] <= 420  # retryAfterMs + the first jittered step (20 ms)
        await client.close()
