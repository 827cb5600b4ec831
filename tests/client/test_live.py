"""The Python client against a live node: connect, join, relay, request, presence."""

from __future__ import annotations

import pytest

from wsgate.client import Client, ClientError

from ..e2e.gateway import ORIGIN, running
from ..e2e.services import with_service
from ..helpers import eventually
from .live import FAST, Seen, client_of


async def test_connects_with_the_cookie_and_is_welcomed_as_its_user() -> None:
    async with running() as gw, client_of(gw, "alice") as alice:
        assert alice.state == "open"
        assert alice.welcome is not None and alice.welcome["userId"] == "alice"
        pong = await alice.ping({"n": 1})
        assert pong["type"] == "@@wsgate/PONG" and pong["payload"] == {"n": 1}
    assert alice.state == "closed" and alice.pending == 0


async def test_a_relay_reaches_the_other_member_with_from_and_offset() -> None:
    async with running() as gw, client_of(gw, "alice") as alice, client_of(gw, "bob") as bob:
        seen = Seen()
        bob.on("chat/*", seen)
        joined = await alice.join("acme:room")
        assert joined["payload"]["channel"] == "acme:room"
        await bob.join("acme:room")
        assert await alice.dispatch({"type": "chat/MESSAGE", "payload": {"text": "hi"},
                                     "meta": {"channel": "acme:room"}})
        await eventually(lambda: seen.of("chat/MESSAGE"), what="bob got the message")
        got = seen.of("chat/MESSAGE")[0]
        assert got["payload"] == {"text": "hi"}
        assert got["meta"]["from"]["userId"] == "alice"
        assert bob.offset("acme:room") == got["meta"]["offset"]
        assert bob.channels == ["acme:room"]


async def test_a_refused_join_raises_the_gateways_code_and_forgets_the_channel() -> None:
    async with running() as gw, client_of(gw, "alice") as alice:
        with pytest.raises(ClientError) as err:
            await alice.join("globex:orders/1")  # not alice's organization
        assert err.value.code == "FORBIDDEN"
        assert alice.channels == [] and alice.pending == 0


async def test_a_request_is_answered_through_a_service_by_meta_id() -> None:
    async with with_service() as (gw, _svc), client_of(gw, "alice") as alice:
        reply = await alice.send("svc/ECHO", {"n": 7}, {"id": "r-7"})
        assert reply["type"] == "svc/ECHOED"
        assert reply["meta"]["inReplyTo"] == "r-7"
        assert reply["payload"]["got"] == {"n": 7}
        with pytest.raises(ClientError) as err:
            await alice.send("fail/X", {})
        assert err.value.code == "UPSTREAM_ERROR"
        with pytest.raises(ClientError) as err:
            await alice.send("nowhere/X", {})
        assert err.value.code == "NO_ROUTE"
        assert alice.pending == 0


async def test_presence_follows_joined_and_the_diffs() -> None:
    async with running() as gw, client_of(gw, "alice") as alice, client_of(gw, "bob") as bob:
        await alice.join("acme:room")
        assert [m.user_id for m in alice.presence("acme:room")] == ["alice"]
        await bob.join("acme:room")
        await eventually(lambda: alice.presence_count("acme:room") == 2, what="bob appears")
        assert {m.user_id for m in alice.presence("acme:room")} == {"alice", "bob"}
        assert {m.user_id for m in bob.presence("acme:room")} == {"alice", "bob"}
        left = await bob.leave("acme:room")
        assert left is not None and left["type"] == "@@wsgate/LEFT"
        assert bob.presence("acme:room") == [] and bob.channels == []
        await eventually(lambda: alice.presence_count("acme:room") == 1, what="bob leaves")
        assert [m.user_id for m in alice.presence("acme:room")] == ["alice"]


async def test_navigate_leaves_the_previous_view_of_the_hub() -> None:
    async with running() as gw, client_of(gw, "alice") as alice:
        first = await alice.navigate("orders/1")
        assert first["payload"]["channel"] == "acme:orders/1"
        second = await alice.navigate("orders/2")
        assert second["payload"]["channel"] == "acme:orders/2"
        assert alice.channels == ["acme:orders/2"]


async def test_without_a_session_the_node_closes_4401_and_the_client_stops() -> None:
    async with running() as gw:
        client = Client(gw.url, origin=ORIGIN, backoff=FAST)
        unauth = Seen()
        client.on("unauthenticated", unauth)
        await client.start()
        await eventually(lambda: client.state == "closed", what="the client stops")
        assert client.close_code == 4401
        assert unauth.actions == [{"signInUrl": gw.node.config.auth.sign_in_url}]
