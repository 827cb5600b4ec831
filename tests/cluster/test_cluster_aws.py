"""``/@connections/{id}`` (the AWS management API) answers for a connection on any node."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from .cluster import API_KEY, cluster

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_get_post_and_delete_reach_a_connection_on_another_node(broker_url: str) -> None:
    async with cluster(broker_url, size=2) as (a, b), b.peer("bob") as bob, \
            aiohttp.ClientSession() as http:
        url = f"{a.node.api_url}/@connections/{quote(bob.id)}"
        async with http.get(url, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            info = await resp.json()
        assert info["identity"]["sourceIp"] == "127.0.0.1"
        assert info["connectedAt"].endswith("Z")
        async with http.post(url, data=b'{"type":"k/HI"}', headers=AUTH) as resp:
            assert resp.status == 200
        assert (await bob.expect("k/HI"))["type"] == "k/HI"
        async with http.delete(url, headers=AUTH) as resp:
            assert resp.status == 204
        with pytest.raises(ConnectionClosed) as closed:
            await bob.expect("never", timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        async with http.get(url, headers=AUTH) as resp:  # gone now, on its own node too
            assert resp.status == 410
            assert resp.headers["x-amzn-ErrorType"] == "GoneException"


async def test_an_unknown_connection_of_a_live_node_is_gone(broker_url: str) -> None:
    async with cluster(broker_url, size=2) as (a, b), aiohttp.ClientSession() as http:
        url = f"{a.node.api_url}/@connections/{quote(b.node.node_id + '.nobody')}"
        for method in (http.get, http.delete):
            async with method(url, headers=AUTH) as resp:
                assert resp.status == 410, method
