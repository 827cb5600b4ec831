"""The whole node over real sockets: sign-in, hubs, views, presence, relays, errors."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsgate.auth.principal import Principal

from .gateway import ORIGIN, make_config, running


async def test_two_users_of_one_org_see_each_other_and_sync() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        assert set(alice.welcome["hubs"]) == {"system", "public", "acme"}
        await alice.send("@@wsgate/NAVIGATE", {"view": "orders/42"}, id="n")
        joined = await alice.expect("@@wsgate/JOINED")
        assert joined["payload"]["channel"] == "acme:orders/42"
        await bob.send("@@wsgate/NAVIGATE", {"view": "orders/42"}, id="n")
        joined = await bob.expect("@@wsgate/JOINED")
        assert {m["userId"] for m in joined["payload"]["members"]} == {"alice", "bob"}
        presence = await alice.expect("@@wsgate/PRESENCE")
        assert presence["payload"]["joined"][0]["userId"] == "bob"
        await alice.send("chat/MESSAGE", {"text": "hello"}, channel="acme:orders/42")
        got = await bob.expect("chat/MESSAGE")
        assert got["payload"] == {"text": "hello"}
        assert got["meta"]["from"] == {"userId": "alice", "connectionId": alice.id}
        await alice.silent()  # not echoed to its sender
        await bob.send("@@wsgate/NAVIGATE", {"view": "orders/43"}, id="n2")
        await bob.expect("@@wsgate/JOINED")
        presence = await alice.expect("@@wsgate/PRESENCE")
        assert presence["payload"]["left"][0]["userId"] == "bob"


async def test_other_organizations_never_see_the_view() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("carol", "globex") as carol:
        assert (await alice.join("acme:orders/42"))["type"] == "@@wsgate/JOINED"
        refused = await carol.join("acme:orders/42")
        assert refused["payload"]["code"] == "FORBIDDEN"
        assert refused["error"] is True
        assert (await carol.join("globex:orders/42"))["type"] == "@@wsgate/JOINED"
        await alice.send("chat/MESSAGE", {"text": "secret"}, channel="acme:orders/42")
        await carol.silent()


async def test_each_error_code_and_the_connection_stays_open() -> None:
    config = make_config(server={"max_channels_per_connection": 1})
    async with running(config) as gw, gw.peer("alice") as alice:
        cases = [
            (b"{nope", "BAD_REQUEST"),
            (json.dumps({"type": "x", "meta": {"id": "i" * 65}}).encode(), "TOO_LARGE"),
            (json.dumps({"type": "orders/GET", "meta": {"id": "r"}}).encode(), "NO_ROUTE"),
            (
                json.dumps(
                    {
                        "type": "@@wsgate/JOIN",
                        "payload": {"channel": "globex:x"},
                        "meta": {"id": "r"},
                    }
                ).encode(),
                "FORBIDDEN",
            ),
            (
                json.dumps({"type": "chat/X", "meta": {"id": "r", "channel": "acme:y"}}).encode(),
                "NOT_JOINED",
            ),
        ]
        for data, code in cases:
            await alice.ws.send(data.decode())
            err = await alice.expect("@@wsgate/ERROR")
            assert err["payload"]["code"] == code, data
            if b'"id": "r"' in data:
                assert err["meta"]["inReplyTo"] == "r"
        await alice.ws.send(b"\x00binary")
        assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "BAD_REQUEST"
        assert (await alice.join("acme:a"))["type"] == "@@wsgate/JOINED"
        assert (await alice.join("acme:b"))["payload"]["code"] == "TOO_LARGE"
        await alice.send("@@wsgate/PING", {"still": "open"}, id="p")
        assert (await alice.expect("@@wsgate/PONG"))["payload"] == {"still": "open"}


async def test_message_past_the_limit_closes_1009() -> None:
    async with running(make_config(server={"max_message_bytes": 1024})) as gw, gw.peer("a") as a:
        await a.send("chat/X", {"pad": "x" * 2000})
        with pytest.raises(ConnectionClosed) as closed:
            await a.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


@pytest.mark.parametrize("cookie", [None, "wsgate_session=garbage", "tampered", "expired"])
async def test_no_valid_cookie_gets_error_with_sign_in_then_4401(cookie: str | None) -> None:
    async with running(make_config(auth={"sign_in_url": "https://login.test/in"})) as gw:
        headers = {}
        if cookie == "tampered":
            good = gw.cookie("alice")
            cookie = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
        elif cookie == "expired":
            now = int(time.time())
            sealed = gw.codec.seal(
                Principal(sub="alice", org="acme", iat=now - 7200, exp=now - 3600)
            )
            cookie = f"wsgate_session={sealed}"
        if cookie:
            headers["Cookie"] = cookie
        async with websockets.connect(gw.url, additional_headers=headers, origin=ORIGIN) as ws:  # type: ignore[arg-type]
            err = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert err["type"] == "@@wsgate/ERROR"
            assert err["payload"]["signInUrl"] == "https://login.test/in"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 3)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_plain_get_without_cookie_redirects_to_sign_in() -> None:
    async with running(make_config(auth={"sign_in_url": "/sign-in"})) as gw:
        url = gw.url.replace("ws://", "http://")
        async with aiohttp.ClientSession() as http:
            async with http.get(url, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "/sign-in"
            async with http.get(
                url, allow_redirects=False, headers={"Cookie": gw.cookie("a")}
            ) as resp:
                assert resp.status != 302


async def test_origin_not_allowed_gets_403() -> None:
    async with running() as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(
                gw.url,
                additional_headers={"Cookie": gw.cookie("a")},
                origin="http://evil.test",  # type: ignore[arg-type]
            ):
                pass
        assert refused.value.response.status_code == 403


async def test_anonymous_connections_may_use_public_only() -> None:
    async with running(make_config(auth={"allow_anonymous": True})) as gw, gw.peer(None) as anon:
        assert anon.welcome["hubs"] == ["public"]
        assert anon.welcome["userId"] is None
        assert (await anon.join("public:lobby"))["type"] == "@@wsgate/JOINED"
        assert (await anon.join("acme:orders/1"))["payload"]["code"] == "FORBIDDEN"
        assert (await anon.join("system:announcements"))["payload"]["code"] == "FORBIDDEN"


async def test_stopping_the_node_closes_with_1012() -> None:
    async with running() as gw, gw.peer("a") as a:
        await gw.node.stop()
        with pytest.raises(ConnectionClosed) as closed:
            await a.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
