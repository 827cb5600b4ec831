"""Conflation across nodes, over each backend: the broker assigns the offsets, and each node
conflates what it delivers to its own members (docs/protocol.md "Conflated channels")."""

from __future__ import annotations

import asyncio
import json
import math

from ..e2e.gateway import Peer
from .cluster import cluster

TICKER = "acme:ticker/fx"
WINDOW_MS = 100
SECTIONS = {
    "namespaces": [{"match": "*:ticker/*", "conflate_ms": WINDOW_MS,
                    "conflate_key": "payload.symbol"}],
    "limits": {"default_rate": "5000/1s", "default_burst": 5000},
}


async def _last_values(peer: Peer, last: dict[str, int], timeout: float = 10.0) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {symbol: [] for symbol in last}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(10_000):
        if all(v and v[-1] == last[s] for s, v in seen.items()):
            return seen
        action = await peer.recv(max(0.01, deadline - loop.time()))
        if action["type"] == "chat/TICK":
            seen[action["payload"]["symbol"]].append(action["payload"]["n"])
    raise AssertionError("the last values never arrived")


async def test_a_member_on_another_node_gets_the_latest_per_key_per_window(broker_url: str) -> None:
    symbols = ["EUR", "GBP", "JPY"]
    async with cluster(broker_url, size=2, **SECTIONS) as (a, b), a.peer("alice") as alice, \
            b.peer("bob") as bob:
        await alice.join(TICKER)
        await bob.join(TICKER)
        loop = asyncio.get_running_loop()
        start = loop.time()
        last: dict[str, int] = {}
        for n in range(300):  # a burst, as fast as the socket takes it
            symbol = symbols[n % 3]
            await alice.ws.send(json.dumps({"type": "chat/TICK", "payload": {"symbol": symbol, "n": n},
                                            "meta": {"channel": TICKER}}))
            last[symbol] = n
        seen = await _last_values(bob, last)
        bound = math.ceil((loop.time() - start) * 1000 / WINDOW_MS) + 1
        for symbol, values in seen.items():
            assert values[-1] == last[symbol]
            assert len(values) <= bound and values == sorted(values), (symbol, values, bound)
        assert sum(len(v) for v in seen.values()) < 300
