"""The admin dashboard's page and endpoints over a real node: what each kind of key may do."""

from __future__ import annotations

import asyncio
import base64
import logging

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from ..e2e.gateway import ADMIN_KEY, API_KEY, running

SERVICE = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _bearer_protocol(key: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


async def test_the_dashboard_page_and_its_assets_are_served_without_a_key() -> None:
    async with running() as gw, aiohttp.ClientSession() as http:
        api = gw.node.api_url
        async with http.get(f"{api}/admin", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/admin/"
        for path, kind, marker in (("/admin/", "text/html", "Admin key"),
                                   ("/admin/admin.js", "text/javascript", "/v1/tap?"),
                                   ("/admin/admin.css", "text/css", "body")):
            async with http.get(api + path) as resp:
                assert resp.status == 200, path
                assert resp.headers["Content-Type"].startswith(kind), path
                assert marker in await resp.text(), path
        async with http.get(f"{api}/admin/secret.txt") as resp:
            assert resp.status == 401  # only the page's own files are open


async def test_admin_endpoints_need_an_admin_key_and_a_service_key_is_refused() -> None:
    async with running() as gw, aiohttp.ClientSession() as http:
        api = gw.node.api_url
        for path in ("/v1/admin/nodes", "/v1/admin/errors"):
            async with http.get(api + path) as resp:
                assert resp.status == 401, path
            async with http.get(api + path, headers=SERVICE) as resp:
                assert resp.status == 403, path
        async with http.get(f"{api}/v1/admin/nodes", headers=ADMIN) as resp:
            assert await resp.json() == {"nodes": [{"node": gw.node.node_id, "self": True}]}
        # Admin keys reach what service keys reach too.
        async with http.get(f"{api}/v1/hubs", headers=ADMIN) as resp:
            assert resp.status == 200


async def test_recent_errors_hold_this_nodes_warnings_bounded_and_are_freed_at_stop() -> None:
    async with running() as gw, aiohttp.ClientSession() as http:
        ring = gw.node.recent_errors
        logging.getLogger("wsgate.test").info("not an error")
        logging.getLogger("wsgate.test").warning("upstream %s failed", "orders")
        async with http.get(f"{gw.node.api_url}/v1/admin/errors", headers=ADMIN) as resp:
            errors = (await resp.json())["errors"]
        assert [(e["level"], e["logger"], e["message"]) for e in errors] == [
            ("WARNING", "wsgate.test", "upstream orders failed")
        ]
        for i in range((ring.entries.maxlen or 0) + 5):
            logging.getLogger("wsgate.test").error("e%d", i)
        assert len(ring.entries) == ring.entries.maxlen
    assert ring not in logging.getLogger("wsgate").handlers


async def test_a_service_key_cannot_disconnect_a_user_an_admin_key_can() -> None:
    async with running() as gw, gw.peer("mallory") as tab, aiohttp.ClientSession() as http:
        url = f"{gw.node.api_url}/v1/users/mallory/connections"
        async with http.delete(url, headers=SERVICE) as resp:
            assert resp.status == 403 and "admin" in (await resp.json())["error"]
        await tab.send("@@wsgate/PING", {}, id="p")
        await tab.expect("@@wsgate/PONG")  # still connected
        async with http.delete(url, headers=ADMIN) as resp:
            assert resp.status == 200 and (await resp.json())["disconnected"] == 1
        with pytest.raises(ConnectionClosed) as closed:
            await tab.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_a_browser_tap_carries_the_admin_key_as_a_subprotocol() -> None:
    async with running() as gw, gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        await alice.join("acme:orders/1")
        url = f"{gw.node.api_url}/v1/tap?channel=acme:orders/1"
        for key, status in ((API_KEY, 403), ("wrong", 401)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, protocols=("wsgate.tap", _bearer_protocol(key)))
            assert refused.value.status == status
        async with http.ws_connect(
            url, protocols=("wsgate.tap", _bearer_protocol(ADMIN_KEY))
        ) as ws:
            assert ws.protocol == "wsgate.tap"  # never the key
            await alice.send("chat/SAY", {"text": "hi"}, channel="acme:orders/1", echo=True)
            got = await asyncio.wait_for(ws.receive_json(), 1.0)
        assert got["type"] == "chat/SAY" and got["payload"] == {"text": "hi"}
