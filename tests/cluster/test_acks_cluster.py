"""Acknowledged delivery across nodes, over each backend (memory, a real Redis, a real NATS).

The delivery's state lives in the backend (:mod:`wsgate.cluster.acks`): a client that
leaves before acknowledging gets the action again on another node, with the same offset,
until it acknowledges there; the outcome reads the same on every node.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ..e2e.gateway import Peer, Running
from ..e2e.services import SECRET, start_service
from ..helpers import eventually, free_port
from .cluster import API_KEY, cluster

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def publish(node: Running, to: dict[str, str], n: int, status: int = 202) -> dict[str, Any]:
    body = {"to": to, "action": {"type": "task/DO", "payload": {"n": n}}, "ack": True}
    async with aiohttp.ClientSession(headers=HEADERS) as http, \
            http.post(f"{node.node.api_url}/v1/publish", json=body) as resp:
        assert resp.status == status, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def state(node: Running, ack: str) -> str:
    async with aiohttp.ClientSession(headers=HEADERS) as http, \
            http.get(f"{node.node.api_url}/v1/deliveries/{ack}") as resp:
        if resp.status == 404:
            return "unknown"
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return str(body["state"])


async def states(nodes: tuple[Running, ...], ack: str) -> set[str]:
    return {await state(node, ack) for node in nodes}


async def ack(peer: Peer, action: dict[str, Any]) -> None:
    await peer.send("@@wsgate/ACK", {"offset": action["meta"]["offset"]})
    await peer.send("@@wsgate/PING", {}, id="p")  # the ACK was dispatched once PONG is here
    await peer.expect("@@wsgate/PONG")


async def test_a_reconnect_to_another_node_gets_it_again_until_it_acks(broker_url: str) -> None:
    async with cluster(broker_url, size=2) as (a, b):
        async with a.peer("alice") as alice:
            answer = await publish(a, {"user": "alice"}, 7)
            first = await alice.expect("task/DO", 5)
            assert first["meta"]["ack"] is True
            await eventually(
                lambda: _is(states((a, b), answer["id"]), {"delivered"}), what="delivered"
            )
        for _ in range(2):  # reconnects to B without acknowledging: sent again each time
            async with b.peer("alice") as alice:
                again = await alice.expect("task/DO", 5)
                assert again["payload"] == {"n": 7} and again["meta"]["ack"] is True
                assert again["meta"]["offset"] == first["meta"]["offset"]
        async with b.peer("alice") as alice:
            await ack(alice, await alice.expect("task/DO", 5))
            await eventually(lambda: _is(states((a, b), answer["id"]), {"acked"}), what="acked")
            await alice.silent(0.3)
        for node in (b, a):  # gets it no more, on either node
            async with node.peer("alice") as alice:
                await alice.silent(0.3)


async def _is(found: Any, expected: set[str]) -> bool:
    return bool(await found == expected)


async def test_unacked_is_sent_again_after_the_timeout_in_a_cluster(broker_url: str) -> None:
    async with cluster(broker_url, size=2, inbox={"ack_timeout_ms": 200}) as (a, b), \
            b.peer("alice") as alice, b.peer("bob") as bob:
        answer = await publish(a, {"user": "alice"}, 3)
        first = await alice.expect("task/DO", 5)
        again = await alice.expect("task/DO", 5)
        assert again["meta"]["offset"] == first["meta"]["offset"]
        await ack(alice, again)
        await eventually(lambda: _is(states((a, b), answer["id"]), {"acked"}), what="acked")
        await alice.silent(0.6)
        await bob.silent(0.1)


async def test_an_unacked_delivery_expires_everywhere(broker_url: str) -> None:
    async with cluster(broker_url, size=2, inbox={"ack_ttl_s": 1}) as (a, b):
        answer = await publish(a, {"user": "carol"}, 1)  # carol is offline
        await eventually(lambda: _is(states((a, b), answer["id"]), {"pending"}), what="pending")
        await eventually(lambda: _is(states((a, b), answer["id"]), {"expired"}),
                         timeout=6.0, what="expired")
        async with b.peer("carol") as carol:  # the action is in her inbox, not sent again
            await carol.silent(0.3)


async def test_each_node_bounds_the_deliveries_it_published(broker_url: str) -> None:
    async with cluster(broker_url, size=2, inbox={"max_deliveries": 2}) as (a, b):
        for n in range(2):
            await publish(a, {"user": "carol"}, n)
        full = await publish(a, {"user": "carol"}, 2, status=503)
        assert "unacknowledged" in full["error"]
        await publish(b, {"user": "carol"}, 3)  # another node's own bound


async def test_a_connection_on_another_node_acks_its_delivery(broker_url: str) -> None:
    async with cluster(broker_url, size=2) as (a, b):
        async with b.peer("alice") as alice:
            answer = await publish(a, {"connection": alice.id}, 5)
            got = await alice.expect("task/DO", 5)
            assert got["meta"]["ack"] is True and got["payload"] == {"n": 5}
            await ack(alice, got)
            await eventually(lambda: _is(states((a, b), answer["id"]), {"acked"}), what="acked")
            answer = await publish(a, {"connection": alice.id}, 6)
            await alice.expect("task/DO", 5)
        # Its connection closed before acknowledging: expired with it.
        await eventually(lambda: _is(states((a, b), answer["id"]), {"expired"}), what="expired")


async def test_delivered_is_told_once_by_the_node_that_finished_it(broker_url: str) -> None:
    port = free_port()
    services = {"svc": {"url": f"http://127.0.0.1:{port}/actions", "secret": SECRET}}
    routes = [{"match": "@@wsgate/*", "service": "svc"}]
    async with cluster(broker_url, size=2, services=services, routes=routes) as (a, b):
        svc = await start_service(port, a.node.api_url)
        try:
            async with a.peer("alice") as here, b.peer("alice") as there, \
                    aiohttp.ClientSession() as http:
                answer = await publish(a, {"user": "alice"}, 9)
                got = [await tab.expect("task/DO", 5) for tab in (here, there)]
                assert got[0]["meta"]["offset"] == got[1]["meta"]["offset"]
                await asyncio.gather(ack(here, got[0]), ack(there, got[1]))

                async def told() -> int:
                    async with http.get(f"{svc.url}/events") as resp:
                        return sum(e["type"] == "@@wsgate/DELIVERED" for e in await resp.json())

                await eventually(told, every=0.05, what="DELIVERED at the service")
                assert await states((a, b), answer["id"]) == {"acked"}
                for _ in range(10):  # and no second one (bounded: 10 × 50 ms)
                    assert await told() == 1
                    await asyncio.sleep(0.05)
        finally:
            await svc.stop()


async def test_published_while_offline_it_reaches_a_tab_on_another_node(broker_url: str) -> None:
    async with cluster(broker_url, size=2) as (a, b):
        answer = await publish(a, {"user": "dave"}, 4)  # dave has no tab anywhere
        await eventually(lambda: _is(states((a, b), answer["id"]), {"pending"}), what="pending")
        async with b.peer("dave") as dave, b.peer("erin") as erin:
            got = await dave.expect("task/DO", 5)
            assert got["meta"]["ack"] is True and got["payload"] == {"n": 4}
            await eventually(
                lambda: _is(states((a, b), answer["id"]), {"delivered"}), what="delivered"
            )
            await ack(dave, got)
            await eventually(lambda: _is(states((a, b), answer["id"]), {"acked"}), what="acked")
            await erin.silent(0.1)
