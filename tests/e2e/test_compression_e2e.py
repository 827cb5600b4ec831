"""A node with ``[server] compression = true``: one relay reaches compressed and plain members."""

from __future__ import annotations

import asyncio
import json

import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate

from .gateway import ORIGIN, Peer, make_config, running


async def test_a_relay_reaches_compressed_and_plain_members() -> None:
    config = make_config(server={"compression": True})
    text = "the same order, line after line; " * 200  # about 6.6 KB, compresses well
    async with (
        running(config) as gw,
        gw.peer("alice") as alice,
        gw.peer("bob") as bob,
        websockets.connect(
            gw.url,
            additional_headers={"Cookie": gw.cookie("carol")},
            origin=ORIGIN,  # type: ignore[arg-type]
            compression=None,
            open_timeout=5,
        ) as plain_ws,
    ):
        carol = Peer(plain_ws)
        assert (await carol.recv())["type"] == "@@wsgate/WELCOME"
        assert plain_ws.protocol.extensions == []
        for ws in (alice.ws, bob.ws):
            [ext] = ws.protocol.extensions
            assert isinstance(ext, PerMessageDeflate)
            assert ext.remote_no_context_takeover and ext.local_no_context_takeover
        for peer in (alice, bob, carol):
            await peer.send("@@wsgate/NAVIGATE", {"view": "orders/42"}, id="n")
            await peer.expect("@@wsgate/JOINED")
        for i in range(3):
            # alice's client compresses; the node inflates, relays once, compresses once.
            await alice.send("chat/MESSAGE", {"text": text, "n": i}, channel="acme:orders/42")
            for peer in (bob, carol):
                got = await peer.expect("chat/MESSAGE")
                assert got["payload"] == {"text": text, "n": i}
                assert got["meta"]["from"]["userId"] == "alice"


async def test_off_by_default_on_the_node() -> None:
    async with running() as gw, gw.peer("alice") as alice:
        assert alice.ws.protocol.extensions == []
        await alice.send("@@wsgate/PING", {"x": 1}, id="p")
        pong = json.loads(await asyncio.wait_for(alice.ws.recv(), 3))
        assert pong["type"] == "@@wsgate/PONG"
