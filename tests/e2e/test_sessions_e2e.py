"""Session lifetime end to end: SESSION_EXPIRING, REFRESH, close 4401 at ``exp``.

A real node, real WebSocket clients; credentials with an ``exp`` a few seconds
away (``clock_skew_s = 0``, so the one time rule calls them expired at ``exp``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from wsgate.client import Client

from ..auth.tokens import SECRET, hs256
from ..helpers import eventually
from .gateway import ORIGIN, Peer, Running, make_config, running
from .test_jwt_e2e import context_service

WARNING_S = 2


def session_config(**auth: Any) -> Any:
    return make_config(auth={"expiry_warning_s": WARNING_S, "clock_skew_s": 0,
                             "refresh_url": "/session/refresh", **auth})


def token_config() -> Any:
    return session_config(jwt={"secret": SECRET})


def token(sub: str = "dan", exp_in: int = 600, **extra: Any) -> str:
    now = int(time.time())
    return hs256({"sub": sub, "org": "acme", "iat": now, "exp": now + exp_in, **extra})


@contextlib.asynccontextmanager
async def token_peer(gw: Running, value: str) -> AsyncIterator[Peer]:
    async with websockets.connect(gw.url, origin=ORIGIN, open_timeout=5,  # type: ignore[arg-type]
                                  additional_headers={"Authorization": f"Bearer {value}"}) as ws:
        peer = Peer(ws)
        welcome = await peer.recv()
        assert welcome["type"] == "@@wsgate/WELCOME", welcome
        peer.welcome = welcome["payload"]
        yield peer


async def closed_with(peer: Peer, code: int, timeout: float = 6.0) -> list[dict[str, Any]]:
    """Read until the close; assert its code; return what came before it."""
    seen: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(100):
            seen.append(await peer.recv(timeout))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, seen
    return seen


async def past(moment: float) -> None:
    """Wait (bounded, polling the clock) until the wall clock is past ``moment``."""
    await eventually(lambda: time.time() > moment, timeout=moment - time.time() + 3,
                     what=f"the clock past {moment}")


async def test_a_cookie_session_is_warned_then_closed_4401_at_exp() -> None:
    async with running(session_config()) as gw:
        exp = int(time.time()) + WARNING_S + 2
        async with gw.peer("ann", exp=exp) as peer:
            warned = await peer.expect("@@wsgate/SESSION_EXPIRING", timeout=5)
            assert warned["payload"] == {"exp": exp, "refreshUrl": "/session/refresh"}
            assert time.time() >= exp - WARNING_S - 0.01
            before = await closed_with(peer, 4401)
            assert time.time() >= exp
            errors = [a for a in before if a["type"] == "@@wsgate/ERROR"]
            assert errors[-1]["payload"] == {"code": "UNAUTHENTICATED", "signInUrl": "/sign-in",
                                             "message": "the session expired"}
        await eventually(lambda: gw.node.sessions.tracked == 0, what="the wheel freed")


async def test_a_token_session_refreshed_outlives_its_first_exp() -> None:
    async with running(token_config()) as gw:
        first = token(exp_in=WARNING_S + 2)
        async with token_peer(gw, first) as peer:
            warned = await peer.expect("@@wsgate/SESSION_EXPIRING", timeout=5)
            old_exp = warned["payload"]["exp"]
            await peer.send("@@wsgate/REFRESH", {"token": token(exp_in=600)})
            await past(old_exp + 1.5)
            await peer.send("@@wsgate/PING", {"n": 1}, id="p")
            pong = await peer.expect("@@wsgate/PONG")
            assert pong["payload"] == {"n": 1}
            assert gw.node.sessions.tracked == 1


async def test_a_token_session_without_refresh_closes_4401_at_exp() -> None:
    async with running(token_config()) as gw, token_peer(gw, token(exp_in=WARNING_S + 1)) as peer:
        before = await closed_with(peer, 4401)
        assert [a["type"] for a in before][:1] == ["@@wsgate/SESSION_EXPIRING"]
        assert before[-1]["payload"]["signInUrl"] == "/sign-in"


async def test_a_refresh_that_drops_a_team_leaves_the_team_view() -> None:
    async with running(token_config()) as gw, token_peer(gw, token(teams=["red", "blue"])) as peer:
        assert (await peer.join("acme:team/red"))["type"] == "@@wsgate/JOINED"
        assert (await peer.join("acme:team/blue"))["type"] == "@@wsgate/JOINED"
        await peer.send("@@wsgate/REFRESH", {"token": token(teams=["blue"])})
        left = await peer.expect("@@wsgate/LEFT")
        assert left["payload"]["channel"] == "acme:team/red"
        assert left["payload"]["reason"]
        conn = gw.node.gateway.pool.connections[peer.id]  # type: ignore[union-attr]
        assert conn.channels == {"acme:team/blue"}
        assert conn.principal.teams == ("blue",)
        again = await peer.join("acme:team/red")
        assert again["payload"]["code"] == "FORBIDDEN"


async def test_a_routed_call_after_a_refresh_carries_the_new_claims_and_the_close_frees_them() -> None:
    """The context's fixed fields are kept per connection (upstream's ``_fixed``): a refresh
    (a new principal) must show in the next call, and the close must free the entry."""
    async with context_service() as svc:
        config = make_config(
            auth={"clock_skew_s": 0, "jwt": {"secret": SECRET}},
            services={"ctx": {"url": f"http://127.0.0.1:{svc.port}/actions"}},
            routes=[{"match": "ctx/*", "service": "ctx"}],
        )
        async with running(config) as gw:
            upstream = gw.node.upstream
            assert upstream is not None
            async with token_peer(gw, token(teams=["red", "blue"], roles=["clerk"])) as peer:
                await peer.send("ctx/GET", {}, id="c1")
                first = (await peer.expect("ctx/GOT"))["payload"]
                await peer.send("ctx/GET", {}, id="c2")
                again = (await peer.expect("ctx/GOT"))["payload"]
                assert first["teams"] == ["red", "blue"] and first["auth"] == "jwt"
                assert first["requestId"] != again["requestId"]
                assert {k: v for k, v in first.items() if k not in ("requestId", "receivedAt")} \
                    == {k: v for k, v in again.items() if k not in ("requestId", "receivedAt")}
                assert upstream.fixed_contexts == 1
                conn = gw.node.gateway.pool.connections[peer.id]  # type: ignore[union-attr]
                await peer.send("@@wsgate/REFRESH", {"token": token(teams=["blue"], roles=["boss"])})
                await eventually(lambda: conn.principal.teams == ("blue",), what="the refresh")
                await peer.send("ctx/GET", {}, id="c3")
                after = (await peer.expect("ctx/GOT"))["payload"]
                assert after["teams"] == ["blue"] and after["roles"] == ["boss"]
                assert after["connectionId"] == first["connectionId"]
            await eventually(lambda: upstream.fixed_contexts == 0, what="the entry freed")


async def test_a_refresh_naming_another_user_is_refused_and_changes_nothing() -> None:
    async with running(token_config()) as gw, token_peer(gw, token("dan", exp_in=WARNING_S + 2)) as peer:
        await peer.send("@@wsgate/REFRESH", {"token": token("eve")}, id="r")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["meta"]["inReplyTo"] == "r" and error["payload"]["code"] == "FORBIDDEN"
        await peer.send("@@wsgate/REFRESH", {"token": "not-a-jwt"}, id="r2")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["payload"]["code"] == "UNAUTHENTICATED"
        await closed_with(peer, 4401)  # the old deadline stands


async def test_a_cookie_refresh_without_a_token_reconnects_to_read_the_new_cookie() -> None:
    async with running(session_config()) as gw, gw.peer("ann") as peer:
        await peer.send("@@wsgate/REFRESH", {})
        await closed_with(peer, 1012)


async def test_a_token_refresh_without_a_token_is_a_bad_request() -> None:
    async with running(token_config()) as gw, token_peer(gw, token()) as peer:
        await peer.send("@@wsgate/REFRESH", {}, id="r")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["payload"]["code"] == "BAD_REQUEST", json.dumps(error)


# Revocation that sticks (one node; tests/cluster/test_revocation.py for three) ----

API_AUTH = {"Authorization": "Bearer test-api-key"}
ADMIN_AUTH = {"Authorization": "Bearer test-admin-key"}


async def api(gw: Running, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = ADMIN_AUTH if path.startswith("/v1/users/") else API_AUTH  # admin-only there
    async with aiohttp.ClientSession() as http, http.request(
        method, f"{gw.node.api_url}{path}", json=body, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def refused_at_handshake(gw: Running, cookie: str) -> None:
    """The upgrade with ``cookie`` gets ERROR UNAUTHENTICATED, then close 4401."""
    async with websockets.connect(gw.url, origin=ORIGIN, open_timeout=5,  # type: ignore[arg-type]
                                  additional_headers={"Cookie": cookie}) as ws:
        peer = Peer(ws)
        before = await closed_with(peer, 4401)
        assert [a["payload"]["code"] for a in before] == ["UNAUTHENTICATED"], before


async def test_deleting_a_users_connections_refuses_the_same_cookie_at_the_next_handshake() -> None:
    async with running(session_config()) as gw:
        cookie = gw.cookie("ann", iat=int(time.time()) - 5)
        async with gw.peer(None, cookie=cookie) as peer:
            status, body = await api(gw, "DELETE", "/v1/users/ann/connections")
            assert (status, body) == (200, {"disconnected": 1})
            await closed_with(peer, 4403)
        await refused_at_handshake(gw, cookie)
        assert gw.node.authenticate.refusals["revoked"] == 1
        async with gw.peer("bob"):  # another user is not affected
            pass


async def test_a_revoked_session_id_closes_4403_and_its_cookie_is_refused() -> None:
    async with running(session_config()) as gw:
        revoked, kept = gw.cookie("ann", sid="s-1"), gw.cookie("ann", sid="s-2")
        async with gw.peer(None, cookie=revoked) as one, gw.peer(None, cookie=kept) as two:
            status, body = await api(gw, "POST", "/v1/revocations", {"sid": "s-1"})
            assert status == 200 and body["revoked"] == "sid:s-1" and body["disconnected"] == 1
            await closed_with(one, 4403)
            await two.send("@@wsgate/PING", {}, id="p")
            assert (await two.expect("@@wsgate/PONG"))["meta"]["inReplyTo"] == "p"
        await refused_at_handshake(gw, revoked)


async def test_a_user_revoked_not_before_refuses_older_tokens_and_a_refresh_with_them() -> None:
    async with running(token_config()) as gw:
        now = int(time.time())
        old = hs256({"sub": "dan", "org": "acme", "iat": now - 30, "exp": now + 600})
        new = hs256({"sub": "dan", "org": "acme", "iat": now, "exp": now + 600})
        async with token_peer(gw, new) as peer:
            status, _ = await api(gw, "POST", "/v1/revocations", {"user": "dan",
                                                                 "notBefore": now - 10})
            assert status == 200
            await peer.send("@@wsgate/REFRESH", {"token": old}, id="r")
            error = await peer.expect("@@wsgate/ERROR")
            assert error["payload"]["code"] == "UNAUTHENTICATED"
        async with websockets.connect(gw.url, origin=ORIGIN, open_timeout=5,  # type: ignore[arg-type]
                                      additional_headers={"Authorization": f"Bearer {old}"}) as ws:
            await closed_with(Peer(ws), 4401)
        assert gw.node.authenticate.tokens is not None
        assert gw.node.authenticate.tokens.refusals["revoked"] == 2


@pytest.mark.parametrize("body", [{}, {"sid": "a", "user": "b"}, {"sid": "a", "notBefore": 1},
                                  {"sid": ""}, {"other": 1}])
async def test_a_bad_revocation_is_refused(body: dict[str, Any]) -> None:
    async with running(session_config()) as gw:
        status, answer = await api(gw, "POST", "/v1/revocations", body)
        assert status == 400 and answer["error"]
        assert gw.node.revocations is not None and len(gw.node.revocations) == 0


async def test_the_python_client_refreshes_through_get_token_and_keeps_its_connection() -> None:
    issued: list[int] = []

    def get_token() -> str:
        exp_in = WARNING_S + 2 if not issued else 600  # the first expires soon, the next later
        issued.append(exp_in)
        return token(exp_in=exp_in)

    async with running(token_config()) as gw:
        closes: list[Any] = []
        client = Client(gw.url, get_token=get_token, origin=ORIGIN, reconnect=False)
        client.on("close", closes.append)
        async with client:
            welcome = await client.wait_open()
            first_exp = int(time.time()) + WARNING_S + 2
            await eventually(lambda: len(issued) == 2, timeout=6, what="get_token asked again")
            conn = gw.node.gateway.pool.connections[welcome["connectionId"]]  # type: ignore[union-attr]
            await eventually(lambda: conn.principal.exp > first_exp + 100, what="the new claims")
            await past(first_exp + 1.5)
            pong = await client.ping({"n": 2})
            assert pong["payload"] == {"n": 2}
            assert closes == []


async def test_a_grpc_disconnect_of_a_user_records_the_same_revocation() -> None:
    from wsgate.api.proto.wsgate.v1 import gateway_pb2 as pb

    from ..api.test_grpc_api import ADMIN as GRPC_AUTH  # a user's disconnect: admin keys only
    from ..api.test_grpc_api import gateway_stub

    config = make_config(api={"grpc_listen": "127.0.0.1:0"},
                         auth={"expiry_warning_s": WARNING_S})
    async with running(config) as gw:
        cookie = gw.cookie("ann", iat=int(time.time()) - 5)
        async with gw.peer(None, cookie=cookie) as peer, gateway_stub(gw.node) as api_stub:
            reply = await api_stub.Disconnect(pb.DisconnectRequest(user="ann"), metadata=GRPC_AUTH)
            assert reply.disconnected == 1
            await closed_with(peer, 4403)
        await refused_at_handshake(gw, cookie)
