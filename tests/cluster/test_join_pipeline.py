"""Connection state and the one join pipeline, across real nodes.

A held connection (a cluster-wide rate limit in flight) that closes leaves
nothing behind; the internal API's joins and joins arriving from another
node go through the same gates as a client's JOIN.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import aiohttp
import pytest

from wsgate.backends.base import SharedLimits

from ..e2e.services import SECRET, start_service
from ..helpers import free_port
from ..helpers import settled as _until
from .cluster import API_KEY, cluster

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SHARED_RULE = [{"match": "profile/SET_NICKNAME", "per": "user", "rate": "1/60s", "burst": 1}]


class _GatedLimits:
    """The node's real shared limits, whose ``acquire`` waits for the test to open it.

    Only the timing is controlled (a hold long enough to close inside it);
    every answer comes from the real backend.
    """

    def __init__(self, inner: SharedLimits) -> None:
        self.inner = inner
        self.entered = 0
        self.open = asyncio.Event()

    async def acquire(self, key: str, interval: float, tolerance: float) -> float:
        self.entered += 1
        await asyncio.wait_for(self.open.wait(), 10)
        return await self.inner.acquire(key, interval, tolerance)

    async def count(self, key: str, member: str, node: str, delta: int) -> int:
        return await self.inner.count(key, member, node, delta)

    async def forget_node(self, node: str) -> None:
        await self.inner.forget_node(node)


async def test_a_connection_closed_while_held_leaves_nothing_behind(broker_url: str) -> None:
    async with cluster(broker_url, size=2, rate_limits=SHARED_RULE,
                       relays=[{"match": "profile/*"}],
                       limits={"max_connections_per_user": 2}) as (a, b), b.peer("bob") as bob:
        assert a.node.bus is not None and a.node.gateway is not None
        shared = a.node.bus.limits
        gate = _GatedLimits(shared._limits)
        shared._limits = gate
        gw = a.node.gateway
        await bob.join("acme:profile")
        async with a.peer("nina") as nina:
            await nina.join("acme:profile")
            await nina.send("profile/SET_NICKNAME", {"n": "x"}, channel="acme:profile", id="1")
            assert await _until(lambda: gate.entered == 1)  # held now
            conn = gw.pool.connections[nina.id]
        assert await _until(lambda: conn.closed)  # the socket is gone while held
        gate.open.set()
        assert await _until(lambda: nina.id not in gw.pool.connections)
        assert gw.pool.channel("acme:profile") is None  # type: ignore[arg-type]
        assert "nina" not in gw.pool.users  # type: ignore[comparison-overlap]
        left = await bob.expect("@@wsgate/PRESENCE", timeout=5)
        for _ in range(10):  # skip the diff of nina's join, if it came late
            if left["payload"]["left"]:
                break
            left = await bob.expect("@@wsgate/PRESENCE", timeout=5)
        assert [m["userId"] for m in left["payload"]["left"]] == ["nina"]
        sizes: list[int] = []

        async def size() -> int:
            return await gate.inner.count("conns|nina", "probe", "a", -1)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        for _ in range(300):
            sizes.append(await size())
            if sizes[-1] == 0 or loop.time() > deadline:
                break
            await asyncio.sleep(0.01)  # the poll's interval (bounded above)
        assert sizes[-1] == 0, sizes


async def test_an_api_join_subscribes_the_channel_across_nodes(broker_url: str) -> None:
    async with cluster(broker_url, size=2) as (a, b), a.peer("alice") as alice, \
            b.peer("bob") as bob, aiohttp.ClientSession() as http:
        await bob.join("acme:room")
        url = f"{a.node.api_url}/v1/connections/{alice.id}/channels/acme:room"
        async with http.put(url, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
        joined = await alice.expect("@@wsgate/JOINED")
        assert joined["payload"]["channel"] == "acme:room"
        await bob.send("chat/MESSAGE", {"text": "hi"}, channel="acme:room")
        got = await alice.expect("chat/MESSAGE")
        assert got["payload"] == {"text": "hi"}


async def test_a_remote_join_refused_by_the_authorize_hook_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    services = {"svc": {"url": f"http://127.0.0.1:{port}/actions", "secret": SECRET}}
    routes = [{"match": "@@wsgate/JOIN", "service": "svc"}]
    broker = f"memory://{uuid.uuid4().hex[:8]}"
    async with cluster(broker, size=2, services=services, routes=routes,
                       routing={"registered_secret": SECRET}) as (a, b):
        svc = await start_service(port, a.node.api_url)
        try:
            async with a.peer("alice") as alice, aiohttp.ClientSession() as http:
                caplog.set_level(logging.INFO, logger="wsgate")
                url = f"{b.node.api_url}/v1/connections/{alice.id}/channels/acme:secret/x"
                async with http.put(url, headers=AUTH) as resp:
                    assert resp.status == 202
                refusals: list[Any] = []

                def refused() -> bool:
                    refusals[:] = [r for r in caplog.records if "refused" in r.getMessage()
                                   and "acme:secret/x" in r.getMessage()]
                    return bool(refusals)

                assert await _until(refused, timeout=5), [r.getMessage() for r in caplog.records]
                assert "FORBIDDEN" in refusals[0].getMessage()
                assert a.node.bus is not None and b.node.bus is not None
                assert a.node.bus.joins_refused == 1
                assert await _until(lambda: b.node.bus is not None and b.node.bus.joins_refused == 1)
                await alice.silent(0.1)
                assert a.node.gateway is not None
                assert a.node.gateway.pool.channel("acme:secret/x") is None  # type: ignore[arg-type]
        finally:
            await svc.stop()
