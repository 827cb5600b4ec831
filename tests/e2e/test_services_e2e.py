"""Procedure discovery end to end: real service processes behind a real node."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ..helpers import eventually, free_port
from .gateway import API_KEY, ORIGIN
from .services import SECRET, start_service, with_service

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_reply_goes_to_the_sender_with_context_and_in_reply_to() -> None:
    async with with_service() as (gw, _), gw.peer("alice", roles=("clerk",)) as alice:
        await alice.join("acme:orders/1")
        await alice.send("svc/ECHO", {"n": 1}, id="r1", channel="acme:orders/1")
        got = await alice.expect("svc/ECHOED")
        assert got["meta"]["inReplyTo"] == "r1"
        assert got["payload"]["got"] == {"n": 1}
        ctx = got["payload"]["context"]
        assert ctx == {"connectionId": alice.id, "userId": "alice", "hub": "acme",
                       "channel": "acme:orders/1", "roles": ["clerk"], "node": gw.node.node_id}


async def test_pipelined_calls_to_an_sdk_service_each_get_their_own_reply() -> None:
    """pipeline = 8 against the SDK's aiohttp server: bursts share connections, no mix-up."""
    async with with_service(pipeline=8) as (gw, _), gw.peer("alice") as alice, gw.peer("bob") as bob:
        for round_ in range(3):
            for peer in (alice, bob):
                for i in range(12):
                    await peer.send("svc/ECHO", {"n": i, "who": peer.id}, id=f"{round_}-{i}")
            for peer in (alice, bob):
                got = [await peer.expect("svc/ECHOED") for _ in range(12)]
                assert sorted(g["meta"]["inReplyTo"] for g in got) == sorted(f"{round_}-{i}" for i in range(12))
                for g in got:
                    assert g["payload"]["got"] == {"n": int(g["meta"]["inReplyTo"].split("-")[1]), "who": peer.id}


async def test_each_upstream_failure_becomes_its_code_without_details() -> None:
    async with with_service() as (gw, _), gw.peer("alice") as alice:
        for type_, code in [("slow/X", "UPSTREAM_TIMEOUT"), ("fail/X", "UPSTREAM_ERROR"),
                            ("bad/X", "UPSTREAM_ERROR"), ("shape/X", "UPSTREAM_ERROR"),
                            ("down/X", "UPSTREAM_UNAVAILABLE"), ("nothing/X", "NO_ROUTE")]:
            await alice.send(type_, {}, id=type_)
            err = await alice.expect("@@wsgate/ERROR")
            assert err["payload"]["code"] == code, type_
            assert err["meta"]["inReplyTo"] == type_
            assert "Traceback" not in err["payload"]["message"]
            assert "127.0.0.1" not in err["payload"]["message"]
        await alice.send("svc/ECHO", {"still": "open"}, id="ok")
        assert (await alice.expect("svc/ECHOED"))["payload"]["got"] == {"still": "open"}


async def test_routes_that_require_a_role() -> None:
    async with with_service() as (gw, _), gw.peer("alice") as alice, gw.peer("boss", roles=("admin",)) as boss:
        await alice.send("admin/PURGE", {}, id="a")
        assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "FORBIDDEN"
        await boss.send("admin/PURGE", {}, id="b")
        err = await boss.expect("@@wsgate/ERROR")  # routed: the service has no handler for it
        assert err["payload"]["code"] == "UPSTREAM_ERROR"


async def test_publish_from_a_service_reaches_its_target_excluding_the_sender() -> None:
    async with with_service() as (gw, _), gw.peer("alice") as alice, gw.peer("bob") as bob, \
            gw.peer("carol", "globex") as carol:
        for p in (alice, bob):
            await p.join("acme:orders/7")
        await carol.join("globex:orders/7")
        await alice.send("svc/PUBLISH", {"to": {"channel": "acme:orders/7"}, "body": {"v": 1}}, id="p")
        got = await bob.expect("svc/NEWS")
        assert got["payload"] == {"v": 1} and got["meta"]["channel"] == "acme:orders/7"
        await alice.silent()
        await carol.silent()


async def test_a_service_pushes_later_by_connection_id() -> None:
    async with with_service() as (gw, _), gw.peer("alice") as alice:
        await alice.send("svc/LATER", {}, id="l")
        got = await alice.expect("svc/PUSHED")
        assert got["payload"] == {"by": "svc"}


async def test_lifecycle_events_reach_the_service_with_context() -> None:
    async with with_service() as (gw, svc):
        async with gw.peer("alice") as alice:
            cid = alice.id
            hello = await alice.expect("svc/HELLO")  # the connect hook's reply, after WELCOME
            assert hello["payload"] == {"ip": "127.0.0.1"}
            await alice.join("acme:orders/9")
            await alice.send("@@wsgate/LEAVE", {"channel": "acme:orders/9"}, id="x")
            await alice.expect("@@wsgate/LEFT")
        events: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http:

            async def five_events() -> bool:
                nonlocal events
                async with http.get(f"{svc.url}/events") as resp:
                    events = [e for e in await resp.json()
                              if e["connectionId"] == cid and e["type"] != "@@wsgate/JOIN"]
                return len(events) >= 5

            await eventually(five_events, every=0.05, what="five lifecycle events at the service")
        assert sorted(e["type"] for e in events) == sorted(
            ["@@wsgate/CONNECT", "@@wsgate/CONNECTED", "@@wsgate/JOINED", "@@wsgate/LEFT", "@@wsgate/DISCONNECTED"])
        assert {e["channel"] for e in events if e["type"] in ("@@wsgate/JOINED", "@@wsgate/LEFT")} == {"acme:orders/9"}


async def test_registration_adds_a_route_and_expires_unless_renewed() -> None:
    async with with_service() as (gw, svc), gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        api = gw.node.api_url
        body = {"url": f"{svc.url}/actions", "actions": ["reg/*"], "ttl": 1}
        registered = time.monotonic()
        async with http.put(f"{api}/v1/services/reg", json=body, headers=AUTH) as resp:
            assert resp.status == 200
        async with http.get(f"{api}/v1/routes", headers=AUTH) as resp:
            table = await resp.json()
        entry = next(e for e in table if e["pattern"] == "reg/*")
        assert entry["instances"][0]["source"] == "registered"
        await alice.send("reg/ECHO", {}, id="r")
        err = await alice.expect("@@wsgate/ERROR")  # routed (the SDK has no reg/ handler)
        assert err["payload"]["code"] == "UPSTREAM_ERROR"
        tries = itertools.count(2)

        async def expired() -> bool:
            await alice.send("reg/ECHO", {}, id=f"r{next(tries)}")
            return bool((await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "NO_ROUTE")

        await eventually(expired, every=0.1, what="the registration expired")
        assert time.monotonic() - registered >= 0.95  # after its ttl of 1 s, not before
        async with http.put(f"{api}/v1/services/reg", json={"url": "nope", "actions": []}, headers=AUTH) as resp:
            assert resp.status == 400


async def test_a_registered_service_is_pipelined_as_routing_registered_pipeline_says() -> None:
    """``[routing] registered_pipeline``: what ``services.<n>.pipeline`` is for a static
    service, for the services known only from self-registration (the SDK's built-in
    server takes pipelined requests: bench/README.md, the SDK's service path)."""
    async with with_service(routing={"registered_pipeline": 8}) as (gw, svc), \
            gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        body = {"url": f"{svc.url}/actions", "actions": ["svc/ECHO"], "ttl": 60}
        async with http.put(f"{gw.node.api_url}/v1/services/reg", json=body, headers=AUTH) as resp:
            assert resp.status == 200
        registered = gw.node.routes.lookup("svc/ECHO")  # more specific than the static svc/*
        assert registered is not None and registered.name == "reg"
        assert registered.pool.pipeline == 8
        static = gw.node.routes.lookup("svc/PUBLISH")
        assert static is not None and static.name == "svc" and static.pool.pipeline == 1
        for i in range(16):  # routing.max_in_flight
            await alice.send("svc/ECHO", {"n": i}, id=f"p{i}")
        got = [await alice.expect("svc/ECHOED") for _ in range(16)]
        assert sorted(g["meta"]["inReplyTo"] for g in got) == sorted(f"p{i}" for i in range(16))
        assert all(g["payload"]["got"] == {"n": int(g["meta"]["inReplyTo"][1:])} for g in got)


async def test_two_instances_share_load_and_a_failed_one_is_taken_out() -> None:
    async with with_service() as (gw, first), gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        second = await start_service(free_port(), gw.node.api_url, name="second")
        try:
            body = {"url": f"{second.url}/actions", "actions": ["svc/*"], "ttl": 60}
            async with http.put(f"{gw.node.api_url}/v1/services/svc", json=body, headers=AUTH) as resp:
                assert resp.status == 200
            served = set()
            for i in range(6):
                await alice.send("svc/ECHO", {"i": i}, id=f"e{i}")
                served.add((await alice.expect("svc/ECHOED"))["payload"]["by"])
            assert served == {"svc", "second"}
            await first.stop()
            for i in range(6):
                await alice.send("svc/ECHO", {"i": i}, id=f"f{i}")
                got = await alice.expect("svc/ECHOED")
                assert got["payload"]["by"] == "second"
            async with http.get(f"{gw.node.api_url}/v1/routes", headers=AUTH) as resp:
                table = await resp.json()
            instances = next(e for e in table if e["pattern"] == "svc/*")["instances"]
            health = {i["url"]: i["healthy"] for i in instances}
            assert health[f"{first.url}/actions"] is False
            assert health[f"{second.url}/actions"] is True
        finally:
            await second.stop()


async def test_example_orders_service() -> None:
    port = free_port()
    from .gateway import make_config, running

    config = make_config(services={"orders": {"url": f"http://127.0.0.1:{port}/actions", "secret": SECRET}},
                         routes=[{"match": "orders/*", "service": "orders"}])
    async with running(config) as gw:
        orders = await start_service(port, gw.node.api_url, module="examples.orders.service")
        try:
            async with gw.peer("alice") as alice, gw.peer("bob") as bob:
                for p in (alice, bob):
                    await p.send("@@wsgate/NAVIGATE", {"view": "orders/42"}, id="n")
                    await p.expect("@@wsgate/JOINED")
                await alice.send("orders/GET", {"id": 42}, id="g")
                item = await alice.expect("orders/ITEM")
                assert item["payload"] == {"id": "42", "status": "new"} and item["meta"]["inReplyTo"] == "g"
                await alice.send("orders/UPDATE", {"id": 42, "status": "packed"}, id="u")
                assert (await alice.expect("orders/SAVED"))["payload"]["status"] == "packed"
                updated = await bob.expect("orders/UPDATED")
                assert updated["payload"] == {"id": "42", "status": "packed", "by": "alice"}
                await alice.silent(0.3)
                started = time.monotonic()
                await bob.send("orders/WATCH", {"id": 42}, id="w")
                reminder = await bob.expect("orders/REMINDER", timeout=5)
                assert reminder["payload"]["status"] == "packed"
                assert time.monotonic() - started >= 1.9
        finally:
            await orders.stop()


async def test_connect_hook_refuses_adds_claims_and_fails_closed() -> None:
    async with with_service() as (gw, _):
        async with gw.peer("vip") as vip:  # the hook made vip an admin: admin routes open
            await vip.send("admin/PURGE", {}, id="a")
            assert (await vip.expect("@@wsgate/ERROR"))["payload"]["code"] == "UPSTREAM_ERROR"
        headers = {"Cookie": gw.cookie("mallory")}
        async with websockets.connect(gw.url, additional_headers=headers, origin=ORIGIN) as ws:  # type: ignore[arg-type]
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(5):
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert frame["type"] != "@@wsgate/WELCOME"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        headers = {"Cookie": gw.cookie("slowpoke")}
        async with websockets.connect(gw.url, additional_headers=headers, origin=ORIGIN) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "@@wsgate/PING", "meta": {"id": "early"}}))
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(5):
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert frame["type"] != "@@wsgate/WELCOME"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_messages_sent_before_welcome_wait_for_admission() -> None:
    async with with_service() as (gw, _):
        headers = {"Cookie": gw.cookie("alice")}
        async with websockets.connect(gw.url, additional_headers=headers, origin=ORIGIN) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "@@wsgate/PING", "payload": 1, "meta": {"id": "early"}}))
            types = []
            for _ in range(3):
                types.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
            assert types == ["@@wsgate/WELCOME", "svc/HELLO", "@@wsgate/PONG"]


async def test_authorize_hook_allows_denies_and_caches() -> None:
    async with with_service() as (gw, svc), gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        refused = await alice.join("acme:secret/plans")
        assert refused["payload"]["code"] == "FORBIDDEN"
        assert (await alice.join("acme:orders/1"))["type"] == "@@wsgate/JOINED"
        await alice.send("@@wsgate/LEAVE", {"channel": "acme:orders/1"}, id="x")
        await alice.expect("@@wsgate/LEFT")
        assert (await alice.join("acme:orders/1"))["type"] == "@@wsgate/JOINED"  # cached verdict
        await alice.send("@@wsgate/NAVIGATE", {"view": "orders/2"}, id="n1")
        await alice.expect("@@wsgate/JOINED")
        await alice.send("@@wsgate/NAVIGATE", {"view": "secret/x"}, id="n2")
        assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "FORBIDDEN"
        async with http.get(f"{gw.node.api_url}/v1/connections/{alice.id}", headers=AUTH) as resp:
            assert "acme:orders/2" in (await resp.json())["channels"]  # the old view is kept
        async with http.get(f"{svc.url}/events") as resp:
            asks = [e["channel"] for e in await resp.json() if e["type"] == "@@wsgate/JOIN"]
        assert asks.count("acme:orders/1") == 1
        assert asks.count("acme:secret/plans") == 1


async def test_a_route_of_a_transport_with_no_invoker_is_upstream_unavailable() -> None:
    """The invoker seam: the route's transport picks the invoker; a missing one fails closed."""
    from wsgate.routing.table import Discovered

    async with with_service() as (gw, _), gw.peer("alice") as alice:
        gw.node.routes.sync("grpc", [Discovered("grpc:none", "127.0.0.1:9", ("rpc/*",), "grpc")])
        for attempt in ("a", "b"):
            await alice.send("rpc/CALL", {}, id=attempt)
            err = await alice.expect("@@wsgate/ERROR")
            assert (err["payload"]["code"], err["meta"]["inReplyTo"]) == ("UPSTREAM_UNAVAILABLE", attempt)
        await alice.send("svc/ECHO", {"n": 2}, id="http")  # the HTTP invoker is untouched
        assert (await alice.expect("svc/ECHOED"))["payload"]["got"] == {"n": 2}
