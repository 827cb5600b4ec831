"""The demo's orders service keeps each organization's orders apart (real node, real clients)."""

from __future__ import annotations

import secrets

from aiohttp import web

from wsgate.demo import _load_orders_module
from wsgate.sdk.publisher import Publisher

from .e2e.gateway import API_KEY, make_config, running
from .helpers import free_port


async def test_an_order_packed_in_acme_is_new_in_globex() -> None:
    port, secret = free_port(), secrets.token_urlsafe(16)
    config = make_config(
        services={"orders": {"url": f"http://127.0.0.1:{port}/actions", "secret": secret}},
        routes=[{"match": "orders/*", "service": "orders"}],
    )
    async with running(config) as gw:
        publisher = Publisher(gw.node.api_url, API_KEY)
        runner = web.AppRunner(_load_orders_module().build(secret, publisher), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with gw.peer("alice", "acme") as alice, gw.peer("carol", "globex") as carol:
                await alice.send("orders/UPDATE", {"id": "42", "status": "packed"}, id="u")
                assert (await alice.expect("orders/SAVED"))["payload"]["status"] == "packed"
                await carol.send("orders/GET", {"id": "42"}, id="g")
                assert (await carol.expect("orders/ITEM"))["payload"] == {"id": "42", "status": "new"}
                await alice.send("orders/GET", {"id": "42"}, id="g2")
                assert (await alice.expect("orders/ITEM"))["payload"]["status"] == "packed"
        finally:
            await runner.cleanup()
            await publisher.aclose()


async def test_procedures_list_shows_the_discovered_routes_from_the_live_table() -> None:
    """``procedures/LIST`` (the demo's Procedures panel) reads GET /v1/routes through the SDK."""
    from wsgate.demo import MODULES_ALIASES, load_example

    port, grpc_port, secret = free_port(), free_port(), secrets.token_urlsafe(16)
    server = await load_example("modules").serve(grpc_port)
    target = f"127.0.0.1:{grpc_port}"
    config = make_config(
        services={"orders": {"url": f"http://127.0.0.1:{port}/actions", "secret": secret}},
        routes=[{"match": "procedures/*", "service": "orders"}],
        grpc=[{"target": target, "discover_every_s": 0.05, "aliases": MODULES_ALIASES}],
    )
    try:
        async with running(config) as gw:
            publisher = Publisher(gw.node.api_url, API_KEY)
            runner = web.AppRunner(_load_orders_module().build(secret, publisher), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                async with gw.peer("alice", "acme") as alice:
                    await alice.send("procedures/LIST", {}, id="p")
                    listed = (await alice.expect("procedures/LISTED"))["payload"]["procedures"]
            finally:
                await runner.cleanup()
                await publisher.aclose()
    finally:
        await server.stop(0)
    by_type = {p["type"]: p for p in listed}
    assert "procedures/*" not in by_type  # a static route: written by hand, not listed
    watch = by_type["modules/WATCH"]
    assert (watch["source"], watch["transport"]) == ("grpc", "grpc")
    assert watch["targets"] == [{"url": target, "healthy": True}]
    assert "oswee.module.v1.ModuleService/ListModules" in by_type
