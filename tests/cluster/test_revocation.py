"""Revocation across three real nodes over each backend (memory, Redis, NATS).

A revocation made through one node's API closes the covered connections on
every node with 4403 (the others within their poll of the store), and the same
cookie is then refused at the handshake of every node.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ..e2e.gateway import Peer, Running
from .cluster import API_KEY, ORIGIN, cluster

AUTH = {"Authorization": f"Bearer {API_KEY}"}
POLL = {"auth": {"revocation_poll_ms": 100}}


async def post(node: Running, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(
        f"{node.node.api_url}{path}", json=body, headers=AUTH
    ) as resp:
        return resp.status, await resp.json()


async def closed_with(peer: Peer, code: int, timeout: float = 5.0) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(100):
            await peer.recv(timeout)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def refused(node: Running, cookie: str) -> None:
    async with websockets.connect(node.url, origin=ORIGIN, open_timeout=5,  # type: ignore[arg-type]
                                  additional_headers={"Cookie": cookie}) as ws:
        peer = Peer(ws)
        error = await peer.recv()
        assert error["type"] == "@@wsgate/ERROR", error
        assert error["payload"]["code"] == "UNAUTHENTICATED"
        await closed_with(peer, 4401)


async def test_a_revoked_session_closes_on_every_node_and_stays_refused(broker_url: str) -> None:
    async with cluster(broker_url, **POLL) as nodes, contextlib.AsyncExitStack() as stack:
        cookie = nodes[0].cookie("ann", sid="s-ann")
        other = nodes[0].cookie("ann", sid="s-other")
        tabs = [await stack.enter_async_context(n.peer(None, cookie=cookie)) for n in nodes]
        kept = await stack.enter_async_context(nodes[2].peer(None, cookie=other))
        status, body = await post(nodes[0], "/v1/revocations", {"sid": "s-ann"})
        assert status == 200 and body["disconnected"] == 1
        for tab in tabs:
            await closed_with(tab, 4403)
        for node in nodes:
            await refused(node, cookie)
        await kept.send("@@wsgate/PING", {}, id="p")
        assert (await kept.expect("@@wsgate/PONG"))["meta"]["inReplyTo"] == "p"


async def test_a_user_revoked_on_one_node_is_refused_on_a_node_started_later(
    broker_url: str,
) -> None:
    async with cluster(broker_url, **POLL) as (a, b, c):
        cookie = a.cookie("bob", iat=int(time.time()) - 5)
        async with b.peer(None, cookie=cookie) as tab:
            status, _ = await post(a, "/v1/revocations", {"user": "bob"})
            assert status == 200
            await closed_with(tab, 4403)
        await c.node.stop()
        await c.node.start()  # reads what the cluster holds before its first upgrade
        await refused(c, cookie)
        async with c.peer("bob", iat=int(time.time()) + 1):  # a new sign-in: not covered
            pass
