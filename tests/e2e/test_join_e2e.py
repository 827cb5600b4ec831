"""Server-side joins and early closes, against a real node and a real service process."""

from __future__ import annotations

import uuid

import aiohttp
import websockets

from ..cluster.cluster import cluster
from ..helpers import free_port
from ..helpers import settled as _until
from .gateway import API_KEY, ORIGIN
from .services import SECRET, start_service, with_service

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_an_api_join_asks_the_authorize_hook_and_answers_its_code() -> None:
    async with with_service() as (gw, _svc), gw.peer("alice") as alice, \
            aiohttp.ClientSession() as http:
        base = f"{gw.node.api_url}/v1/connections/{alice.id}/channels"
        async with http.put(f"{base}/acme:secret/x", headers=AUTH) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == "FORBIDDEN"
        async with http.put(f"{base}/globex", headers=AUTH) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == "BAD_REQUEST"
        async with http.put(f"{base}/acme:orders/1", headers=AUTH) as resp:
            assert resp.status == 200
        joined = await alice.expect("@@wsgate/JOINED")
        assert joined["payload"]["channel"] == "acme:orders/1"


async def test_a_connection_closed_during_the_connect_hook_releases_its_count() -> None:
    port = free_port()
    services = {"svc": {"url": f"http://127.0.0.1:{port}/actions", "secret": SECRET,
                        "timeout_ms": 8000}}
    routes = [{"match": "@@wsgate/CONNECT", "service": "svc"}]
    broker = f"memory://{uuid.uuid4().hex[:8]}"
    async with cluster(broker, size=1, services=services, routes=routes,
                       routing={"registered_secret": SECRET},
                       limits={"max_connections_per_user": 2}) as (a,):
        assert a.node.bus is not None
        svc = await start_service(port, a.node.api_url)
        counts = a.node.bus.limits
        try:
            headers = {"Cookie": a.cookie("slowpoke")}  # the connect hook takes 5 s for them
            async with websockets.connect(a.url, additional_headers=headers, origin=ORIGIN):  # type: ignore[arg-type]
                assert await _until(lambda: bool(counts._counted))  # counted, hook running
            assert await _until(lambda: not counts._counted), counts._counted
        finally:
            await svc.stop()
