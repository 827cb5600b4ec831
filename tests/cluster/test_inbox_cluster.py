"""The personal inbox across nodes, over each backend (memory, a real Redis, a real NATS).

A user's stream lives in the backend: what is published to them on any node while they
are offline is recovered by a RESUME on any other node, in order and once; live pushes
reach each tab once, whichever node published them, and never another user.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..e2e.gateway import Peer, Running
from .cluster import API_KEY, cluster

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def publish(node: Running, user: str, n: int) -> None:
    body = {"to": {"user": user}, "action": {"type": "note/NEW", "payload": {"n": n}}}
    async with aiohttp.ClientSession(headers=HEADERS) as http, \
            http.post(f"{node.node.api_url}/v1/publish", json=body) as resp:
        assert resp.status == 202, await resp.text()


async def notes(peer: Peer, count: int) -> list[dict[str, Any]]:
    return [await peer.expect("note/NEW", 5) for _ in range(count)]


async def test_offline_pushes_on_one_node_are_resumed_on_another(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, c):
        async with a.peer("alice") as alice:
            await publish(b, "alice", 0)
            first = (await alice.expect("note/NEW", 5))["meta"]["offset"]
        for n in range(1, 6):
            await publish(b, "alice", n)
        async with c.peer("bob") as bob, c.peer("alice") as alice:
            assert alice.welcome["inbox"] == first + 5
            await alice.send("@@wsgate/RESUME", {"inbox": first}, id="r")
            answer = await alice.expect("@@wsgate/RESUMED", 5)
            assert answer["payload"] == {"inbox": first + 5, "recovered": True}
            replay = await notes(alice, 5)
            assert [x["payload"]["n"] for x in replay] == [1, 2, 3, 4, 5]
            assert [x["meta"]["offset"] for x in replay] == list(range(first + 1, first + 6))
            await publish(a, "alice", 6)  # live, from a node where alice has no tab
            assert (await alice.expect("note/NEW", 5))["payload"] == {"n": 6}
            await alice.silent(0.3)
            await bob.silent(0.1)


async def test_each_tab_gets_a_live_push_once_whichever_node_published_it(broker_url: str) -> None:
    async with cluster(broker_url) as (a, b, _c), a.peer("alice") as here, \
            b.peer("alice") as there, b.peer("mallory", "globex") as other:
        for n, node in enumerate((a, b, a)):
            await publish(node, "alice", n)
        seen = []
        for tab in (here, there):
            got = await notes(tab, 3)
            # Two nodes' publishes race to the stream: its offsets decide the order.
            offsets = [x["meta"]["offset"] for x in got]
            assert offsets == list(range(offsets[0], offsets[0] + 3))
            seen.append([(x["meta"]["offset"], x["payload"]["n"]) for x in got])
            await tab.silent(0.3)
        assert seen[0] == seen[1]
        assert sorted(n for _, n in seen[0]) == [0, 1, 2]
        await other.silent(0.1)

