"""Conflation across nodes, over each backend: the broker assigns the offsets, and each node
conflates what it delivers to its own members (docs/protocol.md "Conflated channels")."""

from __future__ import annotations

import asyncio
import json
import math

from ..e2e.gateway import Peer
from ..e2e.test_conflation_e2e import _publish, _read_until_last
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


async def test_members_on_both_nodes_get_the_latest_per_window_and_recover_the_latest_per_key(
    broker_url: str,
) -> None:
    """Issue 13's criterion in a cluster: a publisher on A at 1,000 actions/s for 2 s,
    members on A and on B; each gets at most ⌈duration/window⌉ + 1 per key and the last
    value of each; a member of B that was away recovers from B's history the latest
    value of each key (not ``recovered: false`` after 2,000 actions past ``history.size``)."""
    symbols = ["EUR", "GBP", "JPY"]
    async with cluster(broker_url, size=2, **SECTIONS) as (a, b), a.peer("alice") as alice, \
            a.peer("amy") as amy, b.peer("bob") as bob:
        for peer in (alice, amy, bob):
            await peer.join(TICKER)
        async with b.peer("carol") as carol:
            since = (await carol.join(TICKER))["payload"]["offset"]
        loop = asyncio.get_running_loop()
        last, start = await _publish(alice, symbols, 2.0)
        got = await asyncio.gather(*(_read_until_last(p.ws.recv, last) for p in (amy, bob)))
        bound = math.ceil((loop.time() - start) * 1000 / WINDOW_MS) + 1
        for seen in got:
            for symbol, values in seen.items():
                assert values[-1] == last[symbol]
                assert 1 <= len(values) <= bound and values == sorted(values), (symbol, bound)
        async with b.peer("carol") as back:
            await back.send("@@wsgate/JOIN", {"channel": TICKER, "since": since}, id="j")
            joined = await back.expect("@@wsgate/JOINED")
            assert joined["payload"]["recovered"] is True
            replay = await _read_until_last(back.ws.recv, last)
            assert replay == {s: [n] for s, n in last.items()}  # the latest of each key, once
            await back.silent(2 * WINDOW_MS / 1000)
