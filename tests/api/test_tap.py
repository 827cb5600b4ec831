"""The live action tap over a real node: a relayed action reaches a tap client, redacted."""

from __future__ import annotations

import asyncio

import aiohttp

from wsgate.api.tap import SEEN, Tap
from wsgate.core.delivery import Delivery, TargetKind

from ..e2e.gateway import API_KEY, make_config, running

ADMIN_KEY = "test-admin-key"


async def test_tap_sees_a_relayed_action_with_redacted_fields_and_needs_an_admin_key() -> None:
    config = make_config(
        admin={"keys": [ADMIN_KEY]},
        tap={"redact": [{"match": "chat/*", "fields": ["payload.card"]}]},
    )
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob, \
            aiohttp.ClientSession() as http:
        await alice.join("acme:orders/1")
        await bob.join("acme:orders/1")
        url = f"{gw.node.api_url}/v1/tap?channel=acme:orders/1"
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 403
        assert gw.node.gateway is not None and gw.node.gateway.fanout.taps is None
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with http.ws_connect(url, headers=headers) as ws:
            await alice.send("chat/SAY", {"text": "hi", "card": "4111"}, channel="acme:orders/1")
            await bob.expect("chat/SAY")
            got = await asyncio.wait_for(ws.receive_json(), 1.0)
        assert got["type"] == "chat/SAY" and got["to"]["target"] == "acme:orders/1"
        assert got["payload"] == {"text": "hi", "card": "[redacted]"}
        assert got["from"]["connectionId"] == alice.id and got["dropped"] == 0


def _channel() -> Delivery:
    return Delivery(TargetKind.CHANNEL, "acme:a", "chat/SAY", 0)


def test_a_tap_takes_each_channel_offset_once_and_remembers_at_most_seen() -> None:
    tap = Tap("acme:a", None, SEEN * 4)
    for _ in range(3):  # three nodes forward the same action
        tap.offer(_channel(), 7)
    assert len(tap.queue) == 1
    for offset in range(100, 100 + SEEN * 2):
        tap.offer(_channel(), offset)
    assert len(tap._seen) == len(tap._seen_order) == SEEN
    tap.offer(_channel(), 7)  # forgotten long ago: taken again, not a leak
    assert len(tap.queue) == 2 + SEEN * 2
    tap.offer(Delivery(TargetKind.CONNECTION, "n1.c", "x/Y"), 0)
    tap.offer(Delivery(TargetKind.CONNECTION, "n1.c", "x/Y"), 0)  # no offset: never deduplicated
    assert len(tap.queue) == 4 + SEEN * 2
