"""The internal API answers for the whole cluster, whichever node is asked.

Three real nodes over each backend (memory, Redis, NATS); every question goes to
a node that holds none of the connections it is about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from ..e2e.gateway import Running
from .cluster import API_KEY, cluster

AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEADLINE_S = 5.0
"""How long a test waits for the cluster to settle (stores are written asynchronously)."""


async def _get(http: aiohttp.ClientSession, node: Running, path: str) -> tuple[int, Any, str]:
    async with http.get(f"{node.node.api_url}{path}", headers=AUTH) as resp:
        return resp.status, await resp.json(), resp.headers.get("X-Wsgate-Partial", "")


async def _until(
    http: aiohttp.ClientSession, node: Running, path: str, ok: Callable[[int, Any], bool]
) -> tuple[int, Any, str]:
    """GET ``path`` until ``ok(status, body)`` holds or :data:`DEADLINE_S` passes; the last answer."""
    end = time.monotonic() + DEADLINE_S
    for _ in range(200):  # bounded in count as well as time
        answer = await _get(http, node, path)
        if ok(answer[0], answer[1]) or time.monotonic() > end:
            return answer
        await asyncio.sleep(0.05)  # the poll's interval (bounded above), not a synchronization
    return answer


def _users(body: Any) -> set[str]:
    return {m["userId"] for m in body["members"]}


async def test_presence_counts_members_on_every_node(broker_url: str) -> None:
    path = f"/v1/channels/{quote('acme:v', safe='')}/presence"
    async with cluster(broker_url) as (a, b, c), a.peer("alice") as alice, \
            b.peer("bob") as bob, aiohttp.ClientSession() as http:
        await alice.join("acme:v")
        await bob.join("acme:v")
        # c has no member of the channel, a and b hold one each
        status, body, _ = await _until(http, c, path, lambda s, b: b["count"] == 2)
        assert status == 200 and body["channel"] == "acme:v"
        assert body["count"] == 2 and _users(body) == {"alice", "bob"}
        assert {m["connectionId"] for m in body["members"]} == {alice.id, bob.id}
        # a answers the same: its own member and b's, each once
        status, body, _ = await _get(http, a, path)
        assert body["count"] == 2 and _users(body) == {"alice", "bob"}
        # a node that stops beating is dead: its members drop out of every answer
        await b.node.bus.ticker.close()  # type: ignore[union-attr]  # b stops beating
        status, body, _ = await _until(http, c, path, lambda s, b: b["count"] == 1)
        assert body["count"] == 1 and _users(body) == {"alice"}


async def test_hubs_sum_every_node(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, c), a.peer("alice") as alice, \
            b.peer("bob") as bob, b.peer("bea") as bea, aiohttp.ClientSession() as http:
        await alice.join("acme:v")
        await bob.join("acme:v")
        await bea.join("acme:w")

        def settled(status: int, body: Any) -> bool:
            return any(h["hub"] == "acme" and h["connections"] == 3 for h in body)

        status, body, partial = await _until(http, c, "/v1/hubs", settled)
        assert status == 200 and partial == ""
        acme = next((h for h in body if h["hub"] == "acme"), None)
        assert acme is not None, body
        assert acme["connections"] == 3
        assert sorted((ch["channel"], ch["count"]) for ch in acme["channels"]) == [
            ("acme:v", 2), ("acme:w", 1)]
        assert [h["hub"] for h in body].count("acme") == 1  # merged, not one row per node


async def test_connection_status_from_any_node(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, _c), b.peer("bob") as bob, \
            aiohttp.ClientSession() as http:
        await bob.join("acme:v")
        status, body, _ = await _get(http, a, f"/v1/connections/{bob.id}")
        assert status == 200, body
        assert body["connectionId"] == bob.id and body["userId"] == "bob"
        assert body["channels"] == ["acme:v"] and "acme" in body["hubs"]
        # a connection its node does not hold: 404, as for a local one
        status, body, _ = await _get(http, a, "/v1/connections/b.nosuchconnection")
        assert status == 404 and "error" in body
        # an id naming no live node: no node answers, and none is alive to hold it
        status, body, _ = await _get(http, a, "/v1/connections/zz.nosuchnode")
        assert status == 404 and "error" in body


async def test_a_node_that_does_not_answer_is_flagged(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, c), a.peer("alice") as alice, \
            c.peer("carol") as carol, aiohttp.ClientSession() as http:
        await alice.join("acme:v")
        await carol.join("acme:v")
        # c's broker stops routing its node subject to it: c is alive but cannot answer
        c.node.bus._broker.unsubscribe("node.c")  # type: ignore[union-attr]
        await c.node.bus._broker.flush()  # type: ignore[union-attr]
        started = time.monotonic()
        status, body, partial = await _get(http, b, "/v1/hubs")
        assert time.monotonic() - started < 3.0  # a bounded wait, not a hang
        assert status == 200 and partial == "c"
        acme = next((h for h in body if h["hub"] == "acme"), None)
        assert acme is not None and acme["connections"] == 1, body  # a's answer only
        status, body, _ = await _get(http, b, f"/v1/connections/{carol.id}")
        assert status == 504 and "c" in body["error"]
        assert not b.node.bus.query._waiting  # type: ignore[union-attr]  # every wait freed
