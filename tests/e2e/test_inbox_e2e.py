"""The personal inbox on one node (memory): what is pushed to a user is kept for them.

Real node, real WebSocket clients, real HTTP publishes to the internal API.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from wsgate.core.inbox import stream_of

from ..helpers import eventually
from .gateway import API_KEY, Peer, Running, make_config, running

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def publish(gw: Running, user: str, n: int, type_: str = "note/NEW") -> None:
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        body = {"to": {"user": user}, "action": {"type": type_, "payload": {"n": n}}}
        async with http.post(f"{gw.node.api_url}/v1/publish", json=body) as resp:
            assert resp.status == 202, await resp.text()


async def resume(peer: Peer, offset: int) -> dict[str, Any]:
    await peer.send("@@wsgate/RESUME", {"inbox": offset}, id="r")
    return await peer.expect("@@wsgate/RESUMED")


async def take(peer: Peer, count: int) -> list[dict[str, Any]]:
    return [await peer.expect("note/NEW") for _ in range(count)]


async def test_welcome_carries_the_inbox_and_live_pushes_carry_offsets() -> None:
    async with running(make_config()) as gw, gw.peer("alice") as alice:
        assert alice.welcome["inbox"] == 0  # an inbox that never held anything
        await publish(gw, "alice", 1)
        got = await alice.expect("note/NEW")
        assert got["payload"] == {"n": 1}
        assert "channel" not in got["meta"]
        first = got["meta"]["offset"]
        assert first > 0
        await publish(gw, "alice", 2)
        assert (await alice.expect("note/NEW"))["meta"]["offset"] == first + 1


async def test_an_offline_user_accumulates_and_a_reconnect_resumes_exactly_once() -> None:
    async with running(make_config()) as gw:
        async with gw.peer("alice") as alice:
            await publish(gw, "alice", 0)
            last = (await alice.expect("note/NEW"))["meta"]["offset"]
        for n in range(1, 6):  # nobody of alice's is connected
            await publish(gw, "alice", n)
        async with gw.peer("bob") as bob, gw.peer("alice") as alice:
            assert alice.welcome["inbox"] == last + 5
            answer = await resume(alice, last)
            assert answer["payload"] == {"inbox": last + 5, "recovered": True}
            assert answer["meta"]["inReplyTo"] == "r"
            replay = await take(alice, 5)
            assert [a["payload"]["n"] for a in replay] == [1, 2, 3, 4, 5]
            assert [a["meta"]["offset"] for a in replay] == list(range(last + 1, last + 6))
            await publish(gw, "alice", 6)  # live after the replay, once
            assert (await alice.expect("note/NEW"))["payload"] == {"n": 6}
            await alice.silent(0.2)
            await bob.silent(0.1)  # another user's inbox never reaches bob



async def test_pushes_between_welcome_and_resume_arrive_once() -> None:
    async with running(make_config()) as gw:
        async with gw.peer("alice") as alice:
            start = alice.welcome["inbox"]
        await publish(gw, "alice", 1)  # missed
        async with gw.peer("alice") as alice:
            await publish(gw, "alice", 2)  # live, before the client's RESUME
            assert (await alice.expect("note/NEW"))["payload"] == {"n": 2}
            answer = await resume(alice, start)
            assert answer["payload"]["recovered"] is True
            assert (await alice.expect("note/NEW"))["payload"] == {"n": 1}
            await alice.silent(0.2)
        async with gw.peer("alice") as alice:
            await publish(gw, "alice", 3)  # live; the client claims to be past it
            await alice.expect("note/NEW")
            await resume(alice, alice.welcome["inbox"] + 1)
            await alice.silent(0.2)


async def test_resume_is_accepted_once_and_only_first() -> None:
    async with running(make_config()) as gw:
        async with gw.peer("alice") as alice:
            await resume(alice, 0)
            await alice.send("@@wsgate/RESUME", {"inbox": 0}, id="again")
            error = await alice.expect("@@wsgate/ERROR")
            assert error["payload"]["code"] == "BAD_REQUEST"
            assert error["meta"]["inReplyTo"] == "again"
        async with gw.peer("alice") as alice:
            await alice.send("@@wsgate/PING", {}, id="p")
            await alice.expect("@@wsgate/PONG")
            await alice.send("@@wsgate/RESUME", {"inbox": 0}, id="late")
            assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "BAD_REQUEST"
        async with gw.peer("alice") as alice:
            await alice.send("@@wsgate/RESUME", {"inbox": -1}, id="bad")
            assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "BAD_REQUEST"


async def test_an_anonymous_connection_has_no_inbox() -> None:
    config = make_config(auth={"allow_anonymous": True})
    async with running(config) as gw, gw.peer(None) as anonymous:
        assert "inbox" not in anonymous.welcome
        await anonymous.send("@@wsgate/RESUME", {"inbox": 0}, id="anon")
        assert (await anonymous.expect("@@wsgate/ERROR"))["payload"]["code"] == "BAD_REQUEST"


async def test_the_bound_is_enforced_and_a_lost_window_is_not_recovered() -> None:
    config = make_config(inbox={"max_messages": 3})
    async with running(config) as gw:
        async with gw.peer("alice") as alice:
            start = alice.welcome["inbox"]
        for n in range(1, 6):
            await publish(gw, "alice", n)
        async with gw.peer("alice") as alice:
            answer = await resume(alice, start)
            assert answer["payload"]["recovered"] is False
            await alice.silent(0.2)
        async with gw.peer("alice") as alice:  # the last three are still there
            top = alice.welcome["inbox"]
            answer = await resume(alice, top - 3)
            assert answer["payload"]["recovered"] is True
            assert [a["payload"]["n"] for a in await take(alice, 3)] == [3, 4, 5]


async def test_an_inbox_is_freed_ttl_after_its_last_append() -> None:
    config = make_config(inbox={"ttl_s": 1})
    async with running(config) as gw:
        assert gw.node.gateway is not None
        inbox = gw.node.gateway.inbox
        assert inbox is not None
        await publish(gw, "carol", 1)
        assert inbox.top(stream_of("carol")) > 0
        # The node's periodic sweep frees it; nothing else happens on the node.
        await eventually(lambda: len(inbox) == 0, timeout=5.0)
        async with gw.peer("carol") as carol:
            answer = await resume(carol, 1)
            assert answer["payload"]["recovered"] is False


async def test_inbox_off_keeps_user_deliveries_as_before() -> None:
    async with running(make_config(inbox={"enabled": False})) as gw, gw.peer("alice") as alice:
        assert "inbox" not in alice.welcome
        await publish(gw, "alice", 1)
        got = await alice.expect("note/NEW")
        assert "offset" not in got.get("meta", {})
        await alice.send("@@wsgate/RESUME", {"inbox": 0}, id="r")
        assert (await alice.expect("@@wsgate/ERROR"))["payload"]["code"] == "BAD_REQUEST"
