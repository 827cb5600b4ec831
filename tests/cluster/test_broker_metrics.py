"""The broker's families in ``/metrics`` over a real Redis and a real NATS: lag moves when a
relayed action crosses the broker, dropped when the server is gone, reconnects when it is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import aiohttp
import pytest

from ..helpers import eventually
from ..servers import ServerProcess, nats_server, redis_server
from ..test_metrics import samples, value
from .cluster import API_KEY, cluster

SERVERS: dict[str, Callable[[], AbstractContextManager[ServerProcess]]] = {
    "redis": redis_server,
    "nats": nats_server,
}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with SERVERS[request.param]() as s:
        yield s


async def test_lag_dropped_and_reconnects_move(server: ServerProcess) -> None:
    async with cluster(server.url, size=2) as (a, b):
        before = await samples(a)
        assert value(before, "wsgate_broker_connected") == 1
        assert value(before, "wsgate_broker_reconnects_total") == 0
        assert value(before, "wsgate_broker_lag_seconds_count") == 0
        async with a.peer("u1") as p, b.peer("u2") as q:
            await p.join("acme:room")
            await q.join("acme:room")
            await p.send("chat/SAY", {"t": "hi"}, channel="acme:room")
            await q.expect("chat/SAY")

            async def lag_counted() -> bool:
                got = await samples(b)
                return value(got, "wsgate_broker_lag_seconds_count") >= 1

            await eventually(lag_counted, what="the relayed action's lag on the other node")
            got = await samples(b)
            lag = value(got, "wsgate_broker_lag_seconds_sum")
            assert 0 < lag < 5 * value(got, "wsgate_broker_lag_seconds_count")

            server.stop()
            body = {"to": {"hub": "acme"}, "action": {"type": "x/PING"}}
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with aiohttp.ClientSession() as http:
                for _ in range(200):  # bounded: the first publish after the loss is dropped
                    async with http.post(
                        f"{a.node.api_url}/v1/publish", json=body, headers=headers
                    ) as resp:
                        assert resp.status == 202, await resp.text()
                    got = await samples(a)
                    if value(got, "wsgate_broker_dropped_total") >= 1:
                        break
            assert value(got, "wsgate_broker_dropped_total") >= 1

            server.start()

            async def back() -> bool:
                got = await samples(a)
                return (
                    value(got, "wsgate_broker_reconnects_total") >= 1
                    and value(got, "wsgate_broker_connected") == 1
                )

            await eventually(back, timeout=20, what="the broker reconnected and counted it")
