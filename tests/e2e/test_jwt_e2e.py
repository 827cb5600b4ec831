"""Connection tokens end to end: a real node, real WebSocket clients, a real JWKS server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..auth.jwks_server import jwks_server
from ..auth.tokens import (
    SECRET,
    claims,
    ec_pair,
    ed_pair,
    hmac_with,
    hs256,
    rsa_pair,
    tampered,
    unsigned,
)
from ..helpers import eventually, free_port
from .gateway import ORIGIN, Peer, Running, make_config, running

RSA, EC, ED = rsa_pair("rsa"), ec_pair("ec"), ed_pair("ed")
ALL_KEYS = [RSA.public_pem, EC.public_pem, ED.public_pem]


def jwt_config(*, first_message_ms: int = 300, allow_anonymous: bool = False, **jwt: Any) -> Any:
    table: dict[str, Any] = {"secret": SECRET, "public_keys": ALL_KEYS, **jwt}
    return make_config(auth={"jwt": table, "first_message_ms": first_message_ms,
                             "allow_anonymous": allow_anonymous})


@contextlib.asynccontextmanager
async def connect(gw: Running, headers: dict[str, str] | None = None) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(gw.url, additional_headers=headers or {}, origin=ORIGIN,
                                  open_timeout=5) as ws:  # type: ignore[arg-type]
        yield ws


async def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def refused(ws: ClientConnection) -> dict[str, Any]:
    """The ERROR that precedes the close; asserts the close is 4401."""
    error = await recv(ws)
    assert error["type"] == "@@wsgate/ERROR" and error["payload"]["code"] == "UNAUTHENTICATED", error
    assert error["payload"]["signInUrl"] == "/sign-in"
    with pytest.raises(ConnectionClosed) as closed:
        await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    return error


async def no_one_waits(gw: Running) -> None:
    """Every map entry for a waiting connection was freed."""
    tokens = gw.node.tokens
    assert tokens is not None
    await eventually(lambda: tokens.pending == 0, what="no connection waiting for its token")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bearer_tokens_of_every_algorithm_get_welcome() -> None:
    async with running(jwt_config()) as gw:
        tokens = {"HS256": hs256(claims("hs", org="acme")), "RS256": RSA.sign(claims("rs", org="acme")),
                  "ES256": EC.sign(claims("es", org="acme")), "EdDSA": ED.sign(claims("ed", org="acme"))}
        for (alg, token), sub in zip(tokens.items(), ("hs", "rs", "es", "ed"), strict=True):
            async with connect(gw, bearer(token)) as ws:
                welcome = await recv(ws)
                assert welcome["type"] == "@@wsgate/WELCOME", (alg, welcome)
                assert welcome["payload"]["userId"] == sub
                assert "acme" in welcome["payload"]["hubs"]
        await no_one_waits(gw)


async def test_auth_first_message_then_queued_actions_after_welcome() -> None:
    async with running(jwt_config()) as gw, connect(gw) as ws:
        p = Peer(ws)
        await p.send("@@wsgate/AUTH", {"token": ED.sign(claims("dan", org="acme"))})
        await p.send("@@wsgate/JOIN", {"channel": "acme:room/1"}, id="j1")  # sent before WELCOME
        welcome = await p.recv()
        assert welcome["type"] == "@@wsgate/WELCOME" and welcome["payload"]["userId"] == "dan"
        joined = await p.expect("@@wsgate/JOINED")
        assert joined["meta"]["inReplyTo"] == "j1"
        await no_one_waits(gw)


async def test_no_auth_in_time_is_refused_4401() -> None:
    async with running(jwt_config(first_message_ms=200)) as gw, connect(gw) as ws:
        started = time.monotonic()
        error = await refused(ws)
        assert "in time" in error["payload"]["message"]
        assert time.monotonic() - started >= 0.15
        await no_one_waits(gw)


async def test_no_auth_in_time_with_allow_anonymous_is_an_anonymous_session() -> None:
    async with running(jwt_config(first_message_ms=200, allow_anonymous=True)) as gw, connect(gw) as ws:
        welcome = await recv(ws)
        assert welcome["type"] == "@@wsgate/WELCOME" and welcome["payload"]["userId"] is None
        assert welcome["payload"]["hubs"] == ["public"]
        await no_one_waits(gw)


async def test_only_auth_is_accepted_first() -> None:
    async with running(jwt_config(first_message_ms=5000)) as gw:
        for first in ({"type": "@@wsgate/JOIN", "payload": {"channel": "acme:x/1"}, "meta": {"id": "j"}},
                      {"type": "@@wsgate/AUTH", "payload": {}}, "not json"):
            async with connect(gw) as ws:
                await ws.send(first if isinstance(first, str) else json.dumps(first))
                error = await refused(ws)
                if isinstance(first, dict) and first["type"] == "@@wsgate/JOIN":
                    assert error["meta"]["inReplyTo"] == "j"
        await no_one_waits(gw)


FORGERIES = {
    "wrong aud": lambda: RSA.sign(claims("dan", aud="other", iss="https://id.test")),
    "wrong iss": lambda: RSA.sign(claims("dan", aud="wsgate", iss="https://evil.test")),
    "expired": lambda: EC.sign({"sub": "dan", "aud": "wsgate", "iss": "https://id.test",
                                "exp": int(time.time()) - 3600}),
    "not yet valid": lambda: EC.sign(claims("dan", aud="wsgate", iss="https://id.test",
                                            nbf=int(time.time()) + 3600)),
    "bad signature": lambda: tampered(ED.sign(claims("dan", aud="wsgate", iss="https://id.test"))),
    "alg none": lambda: unsigned(claims("dan", aud="wsgate", iss="https://id.test")),
    "HS/RS confusion": lambda: hmac_with(RSA.public_pem.encode(),
                                         claims("dan", aud="wsgate", iss="https://id.test"), kid="rsa"),
}


@pytest.mark.parametrize("how", ["bearer", "AUTH"])
async def test_each_forgery_is_refused_with_4401(how: str) -> None:
    async with running(jwt_config(audience="wsgate", issuer="https://id.test")) as gw:
        good = RSA.sign(claims("dan", aud="wsgate", iss="https://id.test"))
        for name, make in [("good", lambda: good), *FORGERIES.items()]:
            token = make()
            async with connect(gw, bearer(token) if how == "bearer" else None) as ws:
                if how == "AUTH":
                    await ws.send(json.dumps({"type": "@@wsgate/AUTH", "payload": {"token": token}}))
                if name == "good":
                    assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
                else:
                    await refused(ws)
        assert gw.node.authenticate.tokens is not None
        assert sum(gw.node.authenticate.tokens.refusals[k] for k in ("invalid", "expired")) == len(FORGERIES)
        await no_one_waits(gw)


async def test_a_future_iat_is_refused_for_cookie_and_token_alike() -> None:
    async with running(jwt_config()) as gw:
        now = int(time.time())
        cookie = gw.cookie("dan", iat=now + 3600, exp=now + 7200)
        token = hs256({"sub": "dan", "iat": now + 3600, "exp": now + 7200})
        for _ in range(2):  # first time and again (from any cache)
            async with connect(gw, {"Cookie": cookie}) as ws:
                await refused(ws)
            async with connect(gw, bearer(token)) as ws:
                await refused(ws)


class ContextService:
    """A real HTTP service that answers ``ctx/GET`` with the context it was sent."""

    def __init__(self) -> None:
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"reply": [{"type": "ctx/GOT", "payload": body["context"]}]})


@contextlib.asynccontextmanager
async def context_service() -> AsyncIterator[ContextService]:
    svc = ContextService()
    app = web.Application()
    app.router.add_post("/actions", svc.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", svc.port).start()
    try:
        yield svc
    finally:
        await runner.cleanup()


async def test_cookie_and_token_together_the_context_says_which() -> None:
    async with context_service() as svc:
        config = make_config(
            auth={"jwt": {"secret": SECRET}, "first_message_ms": 200, "allow_anonymous": True},
            services={"ctx": {"url": f"http://127.0.0.1:{svc.port}/actions"}},
            routes=[{"match": "ctx/*", "service": "ctx"}],
        )
        async with running(config) as gw:
            seen: dict[str, dict[str, Any]] = {}
            for how in ("cookie", "jwt", "anonymous"):
                headers = {"cookie": {"Cookie": gw.cookie("carol")},
                           "jwt": bearer(hs256(claims("tom", sid="s7", org="acme"))),
                           "anonymous": {}}[how]
                async with connect(gw, headers) as ws:
                    p = Peer(ws)
                    assert (await p.recv(timeout=3))["type"] == "@@wsgate/WELCOME"
                    await p.send("ctx/GET", {}, id="c")
                    seen[how] = (await p.expect("ctx/GOT"))["payload"]
            assert seen["cookie"]["auth"] == "cookie" and seen["cookie"]["userId"] == "carol"
            assert seen["jwt"]["auth"] == "jwt" and seen["jwt"]["userId"] == "tom"
            assert seen["jwt"]["sessionId"] == "s7" and seen["jwt"]["hub"] == "acme"
            assert seen["anonymous"]["auth"] == "anonymous" and seen["anonymous"]["userId"] == ""


async def test_jwks_rotation_while_clients_connect() -> None:
    old, new = rsa_pair("k1"), rsa_pair("k2")
    async with jwks_server([old]) as issuer:
        config = make_config(auth={"jwt": {"jwks_url": issuer.url, "jwks_min_interval_ms": 1}})
        async with running(config) as gw:
            async with connect(gw, bearer(old.sign(claims("a", org="acme")))) as ws:
                assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
            assert issuer.hits == 1
            issuer.pairs = [old, new]  # rotation: k2 published beside k1
            issuer.gate = asyncio.Event()  # a slow issuer: the new kid's clients all wait on one fetch
            async with contextlib.AsyncExitStack() as stack:
                conns = [await stack.enter_async_context(connect(gw, bearer(new.sign(claims(f"n{i}", org="acme")))))
                         for i in range(10)]
                await eventually(lambda: issuer.hits == 2, what="the one fetch for k2")
                issuer.gate.set()
                for ws in conns:
                    assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
            assert issuer.hits == 2
            async with connect(gw, bearer(old.sign(claims("a2", org="acme")))) as ws:  # k1 still served
                assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
            assert issuer.hits == 2
        await no_one_waits(gw)


async def test_a_flood_of_unknown_kids_does_not_hammer_the_issuer() -> None:
    known = rsa_pair("k1")
    async with jwks_server([known]) as issuer:
        config = make_config(auth={"jwt": {"jwks_url": issuer.url, "jwks_min_interval_ms": 60_000}})
        async with running(config) as gw:
            async with connect(gw, bearer(known.sign(claims("a")))) as ws:
                assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
            stranger = rsa_pair()
            for _ in range(30):
                stranger.kid = secrets.token_hex(6)
                async with connect(gw, bearer(stranger.sign(claims("mallory")))) as ws:
                    await refused(ws)
            assert issuer.hits == 1  # within the interval: no fetch at all for unknown kids
        await no_one_waits(gw)


async def test_a_plain_get_is_redirected_unless_a_cookie_is_valid() -> None:
    """A token is only verified on a WebSocket: a GET with none, or a bearer, is sent to sign in."""
    async with running(jwt_config()) as gw, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{gw.node.port}/elsewhere"
        for headers in ({}, bearer(hs256(claims("dan")))):
            async with http.get(base, headers=headers, allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "/sign-in"
        async with http.get(base, headers={"Cookie": gw.cookie("dan")}, allow_redirects=False) as resp:
            assert resp.status == 404


async def test_a_hostile_first_message_is_refused_and_the_node_lives_on() -> None:
    """Nested past the recursion limit, or an AUTH with extra fields: refused 4401 like any other."""
    async with running(jwt_config(first_message_ms=5000)) as gw:
        deep = '{"type":"@@wsgate/AUTH","payload":{"token":"a"},"meta":{"id":"d"},"z":' + "[" * 30000 + "]" * 30000 + "}"
        extra = json.dumps({"type": "@@wsgate/AUTH", "payload": {"token": hs256(claims("dan")), "x": 1}})
        for first in (deep, extra):
            async with connect(gw) as ws:
                await ws.send(first)
                await refused(ws)
        async with connect(gw, bearer(hs256(claims("dan")))) as ws:
            assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
        await no_one_waits(gw)


@pytest.mark.parametrize("how", ["cookie", "bearer", "AUTH"])
async def test_the_per_user_connection_cap_holds_for_token_users_too(how: str) -> None:
    config = make_config(auth={"jwt": {"secret": SECRET}}, limits={"max_connections_per_user": 1})
    async with running(config) as gw:

        def credential() -> dict[str, str] | None:
            if how == "cookie":
                return {"Cookie": gw.cookie("dan")}
            return bearer(hs256(claims("dan"))) if how == "bearer" else None

        async def open_one() -> ClientConnection:
            ws = await stack.enter_async_context(connect(gw, credential()))
            if how == "AUTH":
                await ws.send(json.dumps({"type": "@@wsgate/AUTH", "payload": {"token": hs256(claims("dan"))}}))
            return ws

        async with contextlib.AsyncExitStack() as stack:
            first = await open_one()
            assert (await recv(first))["type"] == "@@wsgate/WELCOME"
            second = await open_one()
            error = await recv(second)
            assert error["type"] == "@@wsgate/ERROR" and error["payload"]["code"] == "RATE_LIMITED", error
            with pytest.raises(ConnectionClosed) as closed:
                await recv(second)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        await no_one_waits(gw)


async def test_clients_that_leave_while_waiting_free_their_entries() -> None:
    """Closed while awaiting AUTH (a timer) or while its token waits on the JWKS (a task)."""
    pair = rsa_pair("k1")
    async with jwks_server([pair]) as issuer:
        config = make_config(auth={"jwt": {"jwks_url": issuer.url}, "first_message_ms": 60_000})
        async with running(config) as gw:
            tokens = gw.node.tokens
            assert tokens is not None
            async with connect(gw):
                await eventually(lambda: tokens.pending == 1, what="waiting for AUTH")
            await eventually(lambda: tokens.pending == 0, what="the timer freed")
            issuer.gate = asyncio.Event()  # the issuer hangs: the token's verdict waits
            async with connect(gw, bearer(pair.sign(claims("dan")))):
                await eventually(lambda: issuer.hits == 1 and tokens.pending == 1, what="a verdict pending")
            await eventually(lambda: tokens.pending == 0, what="the task freed")
            issuer.gate.set()  # the shared fetch, not cancelled by the leaver, serves the next client
            async with connect(gw, bearer(pair.sign(claims("eve")))) as ws:
                assert (await recv(ws))["type"] == "@@wsgate/WELCOME"
            assert issuer.hits == 1


async def test_auth_on_an_open_connection_is_not_accepted_and_changes_nothing() -> None:
    async with running(jwt_config()) as gw, connect(gw, {"Cookie": gw.cookie("carol")}) as ws:
        p = Peer(ws)
        assert (await p.recv())["payload"]["userId"] == "carol"
        await p.send("@@wsgate/AUTH", {"token": hs256(claims("mallory"))}, id="a")
        error = await p.expect("@@wsgate/ERROR")
        assert error["payload"]["code"] == "NO_ROUTE" and error["meta"]["inReplyTo"] == "a"
        [conn] = gw.node.gateway.pool.connections.values()  # type: ignore[union-attr]
        assert conn.principal.sub == "carol" and conn.principal.auth == "cookie"


async def test_stopping_the_node_ends_a_jwks_fetch_in_flight() -> None:
    pair = rsa_pair("k1")
    async with jwks_server([pair]) as issuer:
        issuer.gate = asyncio.Event()  # the issuer hangs (until the server's own 5 s limit)
        config = make_config(auth={"jwt": {"jwks_url": issuer.url}})
        async with running(config) as gw, connect(gw, bearer(pair.sign(claims("dan")))):
            await eventually(lambda: issuer.hits == 1, what="a fetch in flight")
        fetches = [t for t in asyncio.all_tasks() if "JwksCache._fetch" in repr(t.get_coro())]
        assert [t for t in fetches if not t.done()] == []
        issuer.gate.set()
