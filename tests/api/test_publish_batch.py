"""``POST /v1/publish`` with ``"actions"``: a batch to one target, over real HTTP and WebSockets.

Each member gets the batch in order, every action framed once and the whole
batch in one socket write per member (the test wraps the members' server-side
transports' ``write`` to count; the node runs on the test's asyncio loop, so
they are Python objects). The refusals are the documented 400 and 413.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp

from wsgate.api.ops import MAX_BATCH, MAX_PUBLISH_BYTES
from wsgate.typing import ConnectionId

from ..e2e.gateway import API_KEY, Running, running
from ..helpers import eventually

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _count_writes(gw: Running, cid: str) -> list[bytes]:
    """Every write of connection ``cid``'s server-side transport from now on."""
    sink: Any = gw.node.gateway.pool.connections[ConnectionId(cid)].sink
    tr = sink._wst.underlying_transport
    assert isinstance(tr, asyncio.Transport)
    writes: list[bytes] = []
    real = tr.write

    def counting(data: Any) -> None:
        writes.append(bytes(data))
        real(data)

    tr.write = counting  # type: ignore[method-assign]
    return writes


async def test_a_batch_reaches_each_member_in_order_in_one_write_each() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("bob") as bob, \
            gw.peer("carol") as carol, aiohttp.ClientSession() as http:
        for p in (alice, bob, carol):
            await p.join("acme:orders/1")
        await asyncio.gather(alice.silent(), bob.silent(), carol.silent())  # presence settled
        writes = {p.id: _count_writes(gw, p.id) for p in (alice, bob, carol)}
        actions = [{"type": "note/NEW", "payload": {"i": i}} for i in range(20)]
        body = {"to": {"channel": "acme:orders/1"}, "actions": actions,
                "exclude": {"connection": carol.id}}
        async with http.post(f"{gw.node.api_url}/v1/publish", json=body, headers=AUTH) as r:
            assert r.status == 202, await r.text()
            assert await r.json() == {"delivered": 40}
        for p in (alice, bob):
            got = [await p.expect("note/NEW") for _ in range(20)]
            assert [a["payload"]["i"] for a in got] == list(range(20))
            offsets = [a["meta"]["offset"] for a in got]
            assert offsets == list(range(offsets[0], offsets[0] + 20))
            await eventually(lambda p=p: writes[p.id], what="the member's write")
            assert len(writes[p.id]) == 1, [len(w) for w in writes[p.id]]
            assert writes[p.id][0].count(b'"note/NEW"') == 20
        await carol.silent()
        assert writes[carol.id] == []


async def test_a_batch_to_a_hub_user_and_connection() -> None:
    async with running() as gw, gw.peer("alice") as a1, gw.peer("alice") as a2, \
            gw.peer("bob") as bob, aiohttp.ClientSession() as http:
        url = f"{gw.node.api_url}/v1/publish"
        actions = [{"type": "x/A"}, {"type": "x/B", "payload": [1]}]
        for to, who, n in (({"hub": "acme"}, (a1, a2, bob), 6), ({"user": "alice"}, (a1, a2), 4),
                           ({"connection": bob.id}, (bob,), 2)):
            async with http.post(url, json={"to": to, "actions": actions}, headers=AUTH) as r:
                assert r.status == 202, await r.text()
                assert (await r.json())["delivered"] == n
            for p in who:
                assert [(await p.expect("x/A"))["type"], (await p.expect("x/B"))["payload"]] \
                    == ["x/A", [1]]


async def test_batch_refusals_are_400_and_413() -> None:
    async with running() as gw, gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        url = f"{gw.node.api_url}/v1/publish"
        to = {"hub": "acme"}
        one = {"type": "x/A"}

        async def status(body: Any) -> tuple[int, str]:
            data = io.BytesIO(json.dumps(body).encode())  # aiohttp's advice for large bodies
            async with http.post(url, data=data, headers=AUTH) as r:
                return r.status, (await r.json())["error"]

        assert (await status({"to": to}))[0] == 400  # neither
        assert (await status({"to": to, "action": one, "actions": [one]}))[0] == 400  # both
        assert (await status({"to": to, "actions": []}))[0] == 400  # empty
        assert (await status({"to": to, "actions": [one, {"type": "@@wsgate/WELCOME"}]}))[0] == 400
        user = {"user": "alice"}  # a receipt is for one action: a batch cannot ask for one
        code, message = await status({"to": user, "actions": [one], "ack": True})
        assert code == 400 and "batch" in message
        code, message = await status({"to": to, "actions": [one] * (MAX_BATCH + 1)})
        assert code == 413 and str(MAX_BATCH) in message
        big = {"type": "x/A", "payload": "x" * (MAX_PUBLISH_BYTES // 4)}
        code, _ = await status({"to": to, "actions": [big] * 5})  # over the body limit
        assert code == 413
        async with http.post(url, json={"to": to, "actions": [one] * MAX_BATCH},
                             headers=AUTH) as r:
            assert r.status == 202
        got = [await alice.expect("x/A") for _ in range(MAX_BATCH)]
        assert len(got) == MAX_BATCH  # none of the refused batches delivered anything
        await alice.silent()
