"""Acknowledged delivery on one node: a receipt, redelivery until ACK, the outcome by id.

Real node, real WebSocket clients, real HTTP calls to the internal API.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..helpers import eventually
from .gateway import API_KEY, Peer, Running, make_config, running

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def publish(gw: Running, to: dict[str, str], n: int, status: int = 202) -> dict[str, Any]:
    body = {"to": to, "action": {"type": "task/DO", "payload": {"n": n}}, "ack": True}
    async with aiohttp.ClientSession(headers=HEADERS) as http, \
            http.post(f"{gw.node.api_url}/v1/publish", json=body) as resp:
        assert resp.status == status, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def state(gw: Running, ack: str) -> str:
    async with aiohttp.ClientSession(headers=HEADERS) as http, \
            http.get(f"{gw.node.api_url}/v1/deliveries/{ack}") as resp:
        if resp.status == 404:
            return "unknown"
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        assert body["id"] == ack
        return str(body["state"])


async def ack(peer: Peer, action: dict[str, Any]) -> None:
    await peer.send("@@wsgate/ACK", {"offset": action["meta"]["offset"]})


async def test_a_receipt_is_asked_for_a_connection_or_a_user_only() -> None:
    async with running(make_config()) as gw:
        for to in ({"channel": "acme:orders/1"}, {"hub": "acme"}):
            refused = await publish(gw, to, 0, status=400)
            assert "ack" in refused["error"]
        answer = await publish(gw, {"user": "nobody"}, 0)
        assert await state(gw, answer["id"]) == "pending"
        answer = await publish(gw, {"connection": "x.gone"}, 0)
        assert await state(gw, answer["id"]) == "expired"
        assert await state(gw, "no-such-id") == "unknown"


async def test_an_acked_delivery_reports_delivered_then_acked() -> None:
    async with running(make_config()) as gw, gw.peer("alice") as alice:
        answer = await publish(gw, {"user": "alice"}, 1)
        got = await alice.expect("task/DO")
        assert got["meta"]["ack"] is True and got["meta"]["offset"] > 0
        assert await state(gw, answer["id"]) == "delivered"
        await ack(alice, got)
        await eventually(lambda: gw.node.gateway.acks.state(answer["id"]).value == "acked")  # type: ignore[union-attr]
        assert await state(gw, answer["id"]) == "acked"
        to_conn = await publish(gw, {"connection": alice.id}, 2)
        got = await alice.expect("task/DO")
        assert got["payload"] == {"n": 2} and got["meta"]["ack"] is True
        await ack(alice, got)
        await eventually(lambda: gw.node.gateway.acks.state(to_conn["id"]).value == "acked")  # type: ignore[union-attr]


async def test_a_client_that_leaves_before_acking_gets_it_again_until_it_acks() -> None:
    async with running(make_config()) as gw:
        async with gw.peer("alice") as alice:
            answer = await publish(gw, {"user": "alice"}, 7)
            first = await alice.expect("task/DO")
        for _ in range(2):  # reconnects without acknowledging: sent again each time
            async with gw.peer("alice") as alice:
                again = await alice.expect("task/DO")
                assert again["payload"] == {"n": 7}
                assert again["meta"]["offset"] == first["meta"]["offset"]
        async with gw.peer("alice") as alice:
            await ack(alice, await alice.expect("task/DO"))
            await alice.send("@@wsgate/PING", {}, id="p")
            await alice.expect("@@wsgate/PONG")
        assert await state(gw, answer["id"]) == "acked"
        async with gw.peer("alice") as alice:
            await alice.silent(0.3)


async def test_unacked_is_sent_again_after_the_timeout_while_connected_then_stops() -> None:
    async with running(make_config(inbox={"ack_timeout_ms": 100})) as gw, \
            gw.peer("alice") as alice, gw.peer("bob") as bob:
        await publish(gw, {"user": "alice"}, 3)
        first = await alice.expect("task/DO")
        again = await alice.expect("task/DO", timeout=3)
        assert again["meta"]["offset"] == first["meta"]["offset"]
        await ack(alice, again)
        await alice.send("@@wsgate/PING", {}, id="p")
        await alice.expect("@@wsgate/PONG")
        await alice.silent(0.5)
        await bob.silent(0.1)


async def test_an_unacked_delivery_expires_and_a_full_table_refuses() -> None:
    config = make_config(inbox={"ack_ttl_s": 1, "max_deliveries": 2})
    async with running(config) as gw:
        async with gw.peer("alice") as alice:
            to_conn = await publish(gw, {"connection": alice.id}, 1)
            await alice.expect("task/DO")
        # A connection's delivery expires with the connection.
        await eventually(lambda: gw.node.gateway.acks.state(to_conn["id"]).value == "expired")  # type: ignore[union-attr]
        to_user = await publish(gw, {"user": "carol"}, 2)
        await publish(gw, {"user": "carol"}, 3)  # frees the finished one: the table holds 2
        full = await publish(gw, {"user": "carol"}, 4, status=503)
        assert "unacknowledged" in full["error"]
        await eventually(lambda: gw.node.gateway.acks.state(to_user["id"]).value == "expired",  # type: ignore[union-attr]
                         timeout=5.0)


async def test_an_acknowledgement_is_a_delivered_lifecycle_event_at_the_service() -> None:
    from .services import with_service

    async with with_service() as (gw, svc), gw.peer("alice") as alice:
        answer = await publish(gw, {"user": "alice"}, 5)
        await ack(alice, await alice.expect("task/DO"))
        async with aiohttp.ClientSession() as http:

            async def delivered() -> bool:
                async with http.get(f"{svc.url}/events") as resp:
                    return any(e["type"] == "@@wsgate/DELIVERED" and e["connectionId"] == alice.id
                               for e in await resp.json())

            await eventually(delivered, every=0.05, what="DELIVERED at the service")
        assert await state(gw, answer["id"]) == "acked"


async def test_a_receipt_from_a_user_needs_the_inbox_and_acks_on() -> None:
    async with running(make_config(inbox={"enabled": False})) as gw:
        refused = await publish(gw, {"user": "alice"}, 1, status=503)
        assert "[inbox]" in refused["error"]
    async with running(make_config(inbox={"ack_timeout_ms": 0})) as gw:
        await publish(gw, {"user": "alice"}, 1, status=503)
