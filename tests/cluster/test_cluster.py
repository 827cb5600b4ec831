"""Three real nodes in one process over each backend: memory, Redis, NATS."""

from __future__ import annotations

import asyncio

import aiohttp

from ..helpers import eventually
from .cluster import API_KEY, cluster

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_users_on_different_nodes_share_a_view(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, c), a.peer("alice") as alice, b.peer("bob") as bob:
        assert alice.id.startswith("a.") and bob.id.startswith("b.")
        assert (await alice.join("acme:orders/42"))["type"] == "@@wsgate/JOINED"
        joined = await bob.join("acme:orders/42")
        assert {m["userId"] for m in joined["payload"]["members"]} == {"alice", "bob"}
        assert joined["payload"]["count"] == 2
        presence = await alice.expect("@@wsgate/PRESENCE")
        assert presence["payload"]["joined"][0]["userId"] == "bob"
        await alice.send("chat/MESSAGE", {"text": "hi"}, channel="acme:orders/42")
        got = await bob.expect("chat/MESSAGE")
        assert got["payload"] == {"text": "hi"} and got["meta"]["from"]["userId"] == "alice"
        assert got["meta"]["offset"] > joined["payload"]["offset"]
        await alice.silent()
        # node c has no member of the channel: it received nothing for it
        received = c.node.bus.backend_received()  # type: ignore[union-attr]
        assert not any(s.startswith("chan.acme:orders/42") for s in received)


async def test_api_of_any_node_reaches_any_connection(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, c), c.peer("carol") as carol, b.peer("carol") as tab2, \
            aiohttp.ClientSession() as http:
        # carol's user and hub subjects are subscribed on connect: wait until live
        await b.node.bus.flush()  # type: ignore[union-attr]
        await c.node.bus.flush()  # type: ignore[union-attr]
        body = {"to": {"connection": carol.id}, "action": {"type": "note/ONE", "payload": 1}}
        async with http.post(f"{a.node.api_url}/v1/publish", json=body, headers=AUTH) as resp:
            assert resp.status == 202
        assert (await carol.expect("note/ONE"))["payload"] == 1
        body = {"to": {"user": "carol"}, "action": {"type": "note/ALL"}}
        async with http.post(f"{a.node.api_url}/v1/publish", json=body, headers=AUTH) as resp:
            assert resp.status == 202
        await carol.expect("note/ALL")
        await tab2.expect("note/ALL")
        body = {"to": {"hub": "acme"}, "action": {"type": "note/HUB"}}
        async with http.post(f"{a.node.api_url}/v1/publish", json=body, headers=AUTH) as resp:
            assert resp.status == 202
        await carol.expect("note/HUB")
        await tab2.expect("note/HUB")
        async with http.delete(f"{a.node.api_url}/v1/connections/{carol.id}", headers=AUTH) as resp:
            assert resp.status == 202
        closed = None
        try:
            await carol.recv(3)
        except Exception as exc:  # ConnectionClosed
            closed = exc
        assert closed is not None


async def test_recovery_after_reconnecting_to_another_node(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, c), a.peer("alice") as alice, \
            a.peer("dave") as dave:
        await alice.join("acme:v")
        await dave.join("acme:v")
        async with b.peer("bob") as bob:
            joined = await bob.join("acme:v")
            offset = joined["payload"]["offset"]
        for i in range(3):
            await alice.send("chat/MESSAGE", {"i": i}, channel="acme:v")
        # Delivered on receipt from the channel's stream: once dave has them, they
        # are stored, so bob's rejoin recovers them from history (not live).
        assert [(await dave.expect("chat/MESSAGE"))["payload"]["i"] for _ in range(3)] == [0, 1, 2]
        async with c.peer("bob") as back:
            await back.send("@@wsgate/JOIN", {"channel": "acme:v", "since": offset}, id="j")
            joined = await back.expect("@@wsgate/JOINED")
            assert joined["payload"]["recovered"] is True
            got = [await back.expect("chat/MESSAGE") for _ in range(3)]
            assert [g["payload"]["i"] for g in got] == [0, 1, 2]


async def test_limits_and_caps_hold_across_nodes(broker_url: str) -> None:
    rule = [{"match": "profile/SET_NICKNAME", "per": "user", "rate": "1/60s", "burst": 1}]
    async with cluster(broker_url, rate_limits=rule, relays=[{"match": "profile/*"}],
                       limits={"max_connections_per_user": 2}) as (a, b, c), \
            a.peer("nina") as tab1, b.peer("nina") as tab2:
        for tab in (tab1, tab2):
            await tab.join("acme:profile")
        await tab1.send("profile/SET_NICKNAME", {"n": "x"}, channel="acme:profile", id="1")
        await tab2.expect("profile/SET_NICKNAME")
        await tab2.send("profile/SET_NICKNAME", {"n": "y"}, channel="acme:profile", id="2")
        err = await tab2.expect("@@wsgate/ERROR")
        assert err["payload"]["code"] == "RATE_LIMITED" and err["meta"]["inReplyTo"] == "2"
        # a third tab on a third node is past the per-user cap of 2
        import json

        import websockets
        from websockets.exceptions import ConnectionClosed

        headers = {"Cookie": c.cookie("nina")}
        async with websockets.connect(c.url, additional_headers=headers, origin="http://app.test") as ws:  # type: ignore[arg-type]
            first = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert first["payload"]["code"] == "RATE_LIMITED"
            try:
                await asyncio.wait_for(ws.recv(), 3)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4429


async def test_registrations_are_shared(broker_url: str) -> None:
    async with cluster(broker_url) as (a, _b, c), aiohttp.ClientSession() as http:
        body = {"url": "http://127.0.0.1:9/x", "actions": ["shared/*"], "ttl": 30}
        async with http.put(f"{a.node.api_url}/v1/services/shared", json=body, headers=AUTH) as resp:
            assert resp.status == 200

        async def shared_on_c() -> bool:
            async with http.get(f"{c.node.api_url}/v1/routes", headers=AUTH) as resp:
                table = await resp.json()
            return any(e["pattern"] == "shared/*" for e in table)

        await eventually(shared_on_c, every=0.05, what="the registration on node c")


async def test_members_of_a_node_that_stops_beating_leave(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, _c), a.peer("alice") as alice, b.peer("bob") as bob:
        await alice.join("acme:v")
        await bob.join("acme:v")
        await alice.expect("@@wsgate/PRESENCE")
        await b.node.bus.ticker.close()  # type: ignore[union-attr]  # b "dies": no more beats
        presence = await alice.expect("@@wsgate/PRESENCE", timeout=5)
        assert presence["payload"]["left"][0]["userId"] == "bob"
        assert presence["payload"]["count"] == 1
