"""NATS services end to end: a real node, a real nats-server, real WebSocket clients and
services written with the SDK's NatsService, found by discovery or declared statically."""

from __future__ import annotations

import contextlib
import gc
import os
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from tests.helpers import eventually, free_port
from tests.servers import ServerProcess
from wsgate.exceptions import ConfigError, Refused
from wsgate.node import Node
from wsgate.sdk.nats_service import NatsService, on_server
from wsgate.sdk.service import Context, Reply

from .gateway import API_KEY, make_config, running

pytestmark = pytest.mark.timeout(60)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
INTERVAL_S = 0.2


def orders() -> NatsService:
    service = NatsService("orders")

    @service.action("orders/GET")
    async def get(action: dict[str, Any], ctx: Context) -> Any:
        return {"type": "orders/GOT", "payload": {"id": action["payload"]["id"], "hub": ctx.hub}}

    @service.action("orders/UPDATE")
    async def update(action: dict[str, Any], ctx: Context) -> Any:
        change = {"type": "orders/CHANGED", "payload": action["payload"]}
        return Reply(publish=[{"to": {"channel": ctx.channel}, "action": change}])

    @service.action("orders/DELETE")
    async def delete(action: dict[str, Any], ctx: Context) -> Any:
        raise Refused("only admins delete orders: see ticket 12")

    return service


def nats_config(url: str, **sections: Any) -> Any:
    discovery = {"nats": {"url": url, "interval_s": INTERVAL_S, "window_ms": 100}}
    return make_config(discovery=discovery, **sections)


async def test_a_discovered_service_replies_publishes_and_refuses(
    nats_proc: ServerProcess,
    svc_nc: Client,
) -> None:
    service = orders()
    async with running(nats_config(nats_proc.url)) as gw:
        await service.start(svc_nc)
        try:
            await eventually(
                lambda: gw.node.routes.lookup("orders/GET") is not None, 3.0, what="discovered"
            )
            url = f"{gw.node.api_url}/v1/routes"
            async with aiohttp.ClientSession() as http, http.get(url, headers=AUTH) as resp:
                routes = {r["pattern"]: r for r in await resp.json()}
            assert routes["orders/GET"]["source"] == "nats"
            assert routes["orders/GET"]["transport"] == "nats"
            assert routes["orders/GET"]["instances"][0]["url"] == "wsgate.orders"
            async with gw.peer("alice") as alice, gw.peer("carol") as carol:
                await alice.send("orders/GET", {"id": 7}, id="r1")
                got = await alice.expect("orders/GOT")
                assert got["payload"] == {"id": 7, "hub": "acme"}
                assert got["meta"]["inReplyTo"] == "r1"

                await alice.join("acme:orders")
                await carol.join("acme:orders")
                await alice.send(
                    "orders/UPDATE", {"id": 7, "status": "paid"}, channel="acme:orders"
                )
                changed = await carol.expect("orders/CHANGED")
                assert changed["payload"] == {"id": 7, "status": "paid"}

                await alice.send("orders/DELETE", {"id": 7}, id="d1")
                err = await alice.expect("@@wsgate/ERROR")
                assert err["payload"]["code"] == "FORBIDDEN"
                assert err["meta"]["inReplyTo"] == "d1"
                assert "ticket" not in str(err)  # the service's text stays out
        finally:
            await service.stop()
        await on_server(svc_nc)
        await eventually(
            lambda: gw.node.routes.lookup("orders/GET") is None,
            INTERVAL_S * 10,
            what="gone after two missed rounds",
        )
        async with gw.peer("alice") as alice:
            await alice.send("orders/GET", {"id": 7}, id="r2")
            assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "NO_ROUTE"


async def test_a_static_nats_service(nats_proc: ServerProcess, svc_nc: Client) -> None:
    service = NatsService("static", subject="static.orders")

    @service.action("*")
    async def echo(action: dict[str, Any], ctx: Context) -> Any:
        return {"type": "static/ECHO", "payload": action["payload"]}

    config = nats_config(
        nats_proc.url,
        services={"st": {"url": "nats:static.orders", "timeout_ms": 1000}},
        routes=[{"match": "static/*", "service": "st"}],
    )
    async with running(config) as gw, gw.peer("alice") as alice:
        await alice.send("static/X", [1], id="s0")  # nobody on the subject yet
        err = await alice.expect("@@wsgate/ERROR")
        assert err["payload"]["code"] == "UPSTREAM_UNAVAILABLE"
        await service.start(svc_nc)
        try:
            st = gw.node.routes.lookup("static/X")
            # Down after no responders, yet tried: a lone subject is never shut out.
            assert st is not None and st.pool.instances[0].failures == 1
            await alice.send("static/X", [2], id="s1")
            got = await alice.expect("static/ECHO")
            assert (got["payload"], got["meta"]["inReplyTo"]) == ([2], "s1")
        finally:
            await service.stop()


def open_sockets() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:"):
                found.add(f"{fd}:{link}")
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_stopped_node_closes_its_nats_connection(
    nats_proc: ServerProcess,
    svc_nc: Client,
) -> None:
    service = orders()
    await service.start(svc_nc)
    gc.collect()
    before = open_sockets()
    node = Node(nats_config(nats_proc.url))
    await node.start()
    try:
        assert node.discovery is not None and node.nats_invoker is not None
        await eventually(lambda: node.routes.lookup("orders/GET") is not None, 3.0, what="found")
    finally:
        await node.stop(deadline_s=1)
        await service.stop()
    assert node.discovery is None and node.nats_invoker is None
    gc.collect()
    assert open_sockets() - before == set()


def test_no_nats_anything_without_a_connection() -> None:
    node = Node(make_config())
    assert node.nats_url is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_node_that_fails_to_start_closes_its_nats_connection(
    nats_proc: ServerProcess,
) -> None:
    gc.collect()
    before = open_sockets()
    dead_broker = f"nats://127.0.0.1:{free_port()}"  # the services' NATS is up, the broker not
    node = Node(nats_config(nats_proc.url, broker={"url": dead_broker}))
    with pytest.raises(ConfigError) as err:
        await node.start()
    assert err.value.key == "broker.url"
    assert node.discovery is None and node.nats_invoker is None
    gc.collect()
    assert open_sockets() - before == set()


async def test_an_unreachable_nats_names_the_key_it_came_from() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError) as err:
        await Node(nats_config(url)).start()
    assert err.value.key == "discovery.nats.url"
    with pytest.raises(ConfigError) as err:
        await Node(make_config(broker={"url": url})).start()
    assert err.value.key == "broker.url"
