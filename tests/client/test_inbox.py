"""The Python client and the personal inbox on a live node: RESUME on reconnect, ACK.

A tab dropped with 4000 reconnects after a short backoff and RESUMEs from the last inbox offset it saw:
its handlers get every push to the user exactly once, in order, whether it arrived before
the drop, on the dying socket or while the client was away. An action with ``meta.ack``
is acknowledged after the handlers ran.
"""

from __future__ import annotations

import aiohttp

from wsgate.core.delivery import Delivery, TargetKind

from ..e2e.gateway import API_KEY, Running, running
from ..helpers import eventually
from .live import Seen, client_of


def push(gw: Running, n: int) -> None:
    assert gw.node.gateway is not None
    gw.node.gateway.fanout.send(Delivery(TargetKind.USER, "alice", "note/NEW", {"n": n}))


async def test_a_reconnect_resumes_the_inbox_and_handlers_see_each_push_once() -> None:
    async with running() as gw, client_of(gw, "alice") as alice:
        seen = Seen()
        alice.on("note/*", seen)
        assert alice.inbox == alice.welcome["inbox"]  # type: ignore[index]
        for n in range(3):
            push(gw, n)
        await eventually(lambda: len(seen.of("note/NEW")) == 3, what="the live pushes")
        welcomes = Seen()
        alice.on("welcome", welcomes)
        assert gw.node.gateway is not None
        gw.node.gateway.disconnect(alice.welcome["connectionId"], 4000, "slow")  # type: ignore[index]
        push(gw, 3)  # on the closing socket, or replayed
        await eventually(lambda: alice.state != "open", what="the drop")
        for n in range(4, 6):  # while the client is away (it backs off)
            push(gw, n)
        await eventually(lambda: welcomes.actions and alice.state == "open", what="back")
        push(gw, 6)
        await eventually(lambda: len(seen.of("note/NEW")) >= 7, what="every push")
        assert [p["n"] for p in seen.payloads("note/NEW")] == list(range(7))


async def test_an_acked_push_is_acknowledged_after_the_handlers_ran() -> None:
    async with running() as gw, client_of(gw, "alice") as alice:
        seen = Seen()
        alice.on("task/*", seen)
        body = {"to": {"user": "alice"}, "action": {"type": "task/DO", "payload": {}}, "ack": True}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http, \
                http.post(f"{gw.node.api_url}/v1/publish", json=body) as resp:
            assert resp.status == 202
            ack = (await resp.json())["id"]
        acks = gw.node.gateway.acks  # type: ignore[union-attr]
        assert acks is not None
        await eventually(lambda: acks.state(ack).value == "acked", what="the ACK")  # type: ignore[union-attr]
        assert len(seen.of("task/DO")) == 1


async def test_a_push_reaching_the_tab_before_its_resumed_is_handled_after_the_replay() -> None:
    """The gateway sends a push made between WELCOME and its reading of RESUME live,
    ahead of RESUMED and the replay (core/inbox.py): the client holds it until the
    replay is in, so its handlers see every push once and in order. (It once moved
    the client's cursor past the replay, which it then dropped as repeats.)"""
    async with running() as gw, client_of(gw, "alice") as alice:
        seen = Seen()
        alice.on("note/*", seen)
        push(gw, 0)
        await eventually(lambda: len(seen.of("note/NEW")) == 1, what="the live push")
        welcomes = Seen()
        # The client emits "welcome" after writing RESUME; the node, on this loop too,
        # has not read it yet, so this push goes out live before RESUMED.
        alice.on("welcome", lambda payload: push(gw, 3))
        alice.on("welcome", welcomes)
        assert gw.node.gateway is not None
        gw.node.gateway.disconnect(alice.welcome["connectionId"], 4000, "slow")  # type: ignore[index]
        for n in (1, 2):  # on the closing socket, or replayed after RESUMED: before 3 either way
            push(gw, n)
        await eventually(lambda: len(seen.of("note/NEW")) >= 4, what="every push")
        assert welcomes.actions
        assert [p["n"] for p in seen.payloads("note/NEW")] == [0, 1, 2, 3]
