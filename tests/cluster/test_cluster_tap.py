"""A tap on one node shows the actions of every node, over memory, Redis and NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from ..e2e.gateway import Running
from ..helpers import eventually
from .cluster import ADMIN_KEY, API_KEY, cluster

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TAP = {"tap": {"redact": [{"match": "chat/*", "fields": ["payload.card"]}]}}


def _forwarders(node: Running) -> int:
    assert node.node.bus is not None
    return len(node.node.bus.taps.forwarders)


def _tapped(node: Running) -> bool:
    assert node.node.gateway is not None
    return node.node.gateway.fanout.taps is not None


@asynccontextmanager
async def _tap(http: aiohttp.ClientSession, node: Running, query: str,
               others: list[Running]) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A tap on ``node``, once each of ``others`` forwards to it."""
    async with http.ws_connect(f"{node.node.api_url}/v1/tap?{query}", headers=ADMIN) as ws:
        for other in others:
            await eventually(lambda o=other: _forwarders(o) == 1, what=f"{other.node.node_id} forwards")
        yield ws


async def _frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), 1.0)
    return frame


async def test_a_channel_tap_shows_every_nodes_actions_once_redacted(broker_url: str) -> None:
    async with cluster(broker_url, **TAP) as (a, b, c), b.peer("alice") as alice, \
            c.peer("bob") as bob, a.peer("dan") as dan, aiohttp.ClientSession() as http:
        assert not any(_tapped(n) for n in (a, b, c))  # no one taps: no watcher anywhere
        for peer in (alice, bob, dan):
            await peer.join("acme:orders/42")
        async with _tap(http, a, "channel=acme:orders/42", [b, c]) as ws:
            await alice.send("chat/SAY", {"text": "hi", "card": "4111"}, channel="acme:orders/42")
            got = await _frame(ws)
            assert got["type"] == "chat/SAY" and got["to"]["target"] == "acme:orders/42"
            assert got["payload"] == {"text": "hi", "card": "[redacted]"}
            assert got["from"]["connectionId"] == alice.id
            # b, c and a each delivered it: the tap shows it once, then the next action.
            await bob.send("chat/SAY", {"text": "next"}, channel="acme:orders/42")
            assert (await _frame(ws))["payload"] == {"text": "next"}
            body = {"to": {"channel": "acme:orders/42"}, "action": {"type": "note/X"}}
            async with http.post(f"{c.node.api_url}/v1/publish", json=body,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.status == 202
            assert (await _frame(ws))["type"] == "note/X"
        for node in (b, c):
            await eventually(lambda n=node: _forwarders(n) == 0 and not _tapped(n),
                             what="forwarders freed when the tap closed")
        await eventually(lambda: not _tapped(a), what="the tap freed")


async def test_a_connection_tap_shows_what_reaches_and_leaves_it_on_its_node(broker_url: str) -> None:
    async with cluster(broker_url, **TAP) as (a, b, c), b.peer("alice") as alice, \
            c.peer("bob") as bob, aiohttp.ClientSession() as http:
        await alice.join("acme:orders/7")
        await bob.join("acme:orders/7")
        await b.node.bus.flush()  # type: ignore[union-attr]
        async with _tap(http, a, f"connection={alice.id}", [b]) as ws:
            assert _forwarders(c) == 0  # only the connection's node forwards
            await alice.send("chat/SAY", {"text": "from"}, channel="acme:orders/7")
            got = await _frame(ws)
            assert got["payload"] == {"text": "from"} and got["from"]["connectionId"] == alice.id
            await bob.expect("chat/SAY")
            body = {"to": {"connection": alice.id}, "action": {"type": "note/TO", "payload": 1}}
            async with http.post(f"{c.node.api_url}/v1/publish", json=body,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.status == 202
            got = await _frame(ws)
            assert got["type"] == "note/TO" and got["to"] == {"kind": "connection", "target": alice.id}


async def test_forwarders_go_when_the_tapping_node_stops(broker_url: str) -> None:
    async with cluster(broker_url, **TAP) as (a, b, c), aiohttp.ClientSession() as http:
        async with _tap(http, a, "channel=acme:orders/1", [b, c]):
            await asyncio.wait_for(a.node.stop(deadline_s=0), 10)
        for node in (b, c):
            # At once when a's goodbye got out; else within the lease (one heartbeat TTL).
            await eventually(lambda n=node: _forwarders(n) == 0 and not _tapped(n), timeout=5,
                             what="forwarders of a stopped node freed")
