"""``[[namespaces]]``: each channel option, on a real node with real WebSocket clients,
the most specific rule winning, and ``GET /v1/channels/{addr}`` showing the effect.

Every test runs two channels side by side: one in the namespace under test and one that
only the global defaults govern, so each test fails if the option has no effect (and if
it leaks onto channels outside its namespace)."""

from __future__ import annotations

from typing import Any

import aiohttp

from .gateway import API_KEY, Peer, Running, make_config, running


def _config(*rules: dict[str, Any], **sections: Any) -> Any:
    return make_config(namespaces=list(rules), **sections)


async def _channel(gw: Running, address: str, key: str = API_KEY) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{gw.node.api_url}/v1/channels/{address}", headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        return resp.status, await resp.json()


async def _join(peer: Peer, channel: str, since: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"channel": channel}
    if since is not None:
        payload["since"] = since
    await peer.send("@@wsgate/JOIN", payload, id=f"join-{channel}")
    for _ in range(100):
        action = await peer.recv()
        if action.get("meta", {}).get("inReplyTo") == f"join-{channel}":
            return action
    raise AssertionError("no answer to JOIN")


async def _say(peer: Peer, channel: str, n: int) -> None:
    """Relay ``n`` messages into ``channel`` and read their echoes (so they are stored)."""
    for i in range(n):
        await peer.send("chat/MESSAGE", {"i": i}, channel=channel, echo=True)
        got = await peer.expect("chat/MESSAGE")
        assert got["payload"] == {"i": i}


async def test_history_size_bounds_what_a_rejoin_recovers() -> None:
    config = _config({"match": "*:small/*", "history_size": 2})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        offsets = {}
        for channel in ("acme:small/a", "acme:big/a"):
            offsets[channel] = (await alice.join(channel))["payload"]["offset"]
            await _say(alice, channel, 5)
        small = await _join(bob, "acme:small/a", since=offsets["acme:small/a"])
        assert small["payload"]["recovered"] is False
        big = await _join(bob, "acme:big/a", since=offsets["acme:big/a"])
        assert big["payload"]["recovered"] is True
        replay = [(await bob.expect("chat/MESSAGE"))["payload"]["i"] for _ in range(5)]
        assert replay == [0, 1, 2, 3, 4]


async def test_history_size_0_keeps_nothing_and_ttl_0_frees_the_stream_with_its_last_member() -> None:
    config = _config(
        {"match": "*:none/*", "history_size": 0}, {"match": "*:brief/*", "history_ttl_s": 0}
    )
    async with running(config) as gw, gw.peer("alice") as alice:
        offsets = {}
        for channel in ("acme:none/a", "acme:brief/a", "acme:kept/a"):
            offsets[channel] = (await alice.join(channel))["payload"]["offset"]
            await _say(alice, channel, 1)
        async with gw.peer("bob") as bob:
            joined = await _join(bob, "acme:none/a", since=offsets["acme:none/a"])
            assert joined["payload"]["recovered"] is True  # nothing was kept, nothing lost:
            await bob.silent(0.2)  # ... and nothing replayed
        for channel in ("acme:brief/a", "acme:kept/a"):
            await alice.send("@@wsgate/LEAVE", {"channel": channel}, id=f"leave-{channel}")
            await alice.expect("@@wsgate/LEFT")
        async with gw.peer("bob") as bob:
            brief = await _join(bob, "acme:brief/a", since=offsets["acme:brief/a"])
            assert brief["payload"]["recovered"] is False
            kept = await _join(bob, "acme:kept/a", since=offsets["acme:kept/a"])
            assert kept["payload"]["recovered"] is True
            assert (await bob.expect("chat/MESSAGE"))["payload"] == {"i": 0}


async def test_recovery_off_replays_nothing_though_history_is_kept() -> None:
    config = _config({"match": "*:live/*", "recovery": False})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        offsets = {}
        for channel in ("acme:live/a", "acme:other/a"):
            offsets[channel] = (await alice.join(channel))["payload"]["offset"]
            await _say(alice, channel, 2)
        live = await _join(bob, "acme:live/a", since=offsets["acme:live/a"])
        assert live["payload"]["recovered"] is False
        await bob.silent(0.2)
        other = await _join(bob, "acme:other/a", since=offsets["acme:other/a"])
        assert other["payload"]["recovered"] is True
        assert (await bob.expect("chat/MESSAGE"))["payload"] == {"i": 0}


async def test_presence_off_sends_no_diffs_and_a_count_only_joined() -> None:
    config = _config({"match": "*:quiet/*", "presence": False})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        await alice.join("acme:quiet/a")
        joined = await bob.join("acme:quiet/a")
        assert joined["payload"]["count"] == 2 and "members" not in joined["payload"]
        await alice.send("@@wsgate/PING", id="p1")
        assert (await alice.recv())["type"] == "@@wsgate/PONG"  # no PRESENCE came before it
        await alice.join("acme:loud/a")
        joined = await bob.join("acme:loud/a")
        assert len(joined["payload"]["members"]) == 2
        diff = await alice.recv()
        assert diff["type"] == "@@wsgate/PRESENCE" and diff["payload"]["channel"] == "acme:loud/a"
        await alice.send("chat/MESSAGE", {"x": 1}, channel="acme:quiet/a")
        assert (await bob.expect("chat/MESSAGE"))["payload"] == {"x": 1}  # relay still works


async def test_presence_max_members_makes_a_namespace_count_only_sooner() -> None:
    config = _config({"match": "*:crowd/*", "presence_max_members": 1})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        await alice.join("acme:crowd/a")
        crowd = await bob.join("acme:crowd/a")
        assert crowd["payload"]["count"] == 2 and "members" not in crowd["payload"]
        await alice.join("acme:room/a")
        room = await bob.join("acme:room/a")
        assert len(room["payload"]["members"]) == 2


async def test_relay_off_refuses_a_clients_relay_with_forbidden() -> None:
    config = _config({"match": "*:feed/*", "relay": False})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        for channel in ("acme:feed/a", "acme:chat/a"):
            await alice.join(channel)
            await bob.join(channel)
        await alice.send("chat/MESSAGE", {"x": 1}, channel="acme:feed/a", id="r1")
        error = await alice.expect("@@wsgate/ERROR")
        assert error["payload"]["code"] == "FORBIDDEN" and error["meta"]["inReplyTo"] == "r1"
        await alice.send("chat/MESSAGE", {"x": 2}, channel="acme:chat/a")
        got = await bob.expect("chat/MESSAGE")
        assert got["payload"] == {"x": 2} and got["meta"]["channel"] == "acme:chat/a"


async def test_max_members_refuses_a_join_past_it_with_too_large() -> None:
    config = _config({"match": "*:pair/*", "max_members": 2})
    async with running(config) as gw, gw.peer("alice") as a, gw.peer("bob") as b, \
            gw.peer("carol") as c:
        assert (await a.join("acme:pair/a"))["type"] == "@@wsgate/JOINED"
        assert (await b.join("acme:pair/a"))["type"] == "@@wsgate/JOINED"
        refused = await c.join("acme:pair/a")
        assert refused["type"] == "@@wsgate/ERROR" and refused["payload"]["code"] == "TOO_LARGE"
        assert (await b.join("acme:pair/a"))["type"] == "@@wsgate/JOINED"  # a rejoin is no new member
        for peer in (a, b, c):
            assert (await peer.join("acme:open/a"))["type"] == "@@wsgate/JOINED"
        await a.send("@@wsgate/LEAVE", {"channel": "acme:pair/a"}, id="bye")
        await a.expect("@@wsgate/LEFT")
        assert (await c.join("acme:pair/a"))["type"] == "@@wsgate/JOINED"


RULES = [
    {"match": "*:ticker/*", "max_members": 40},
    {"match": "*", "max_members": 50},
    {"match": "acme:*", "max_members": 30},
    {"match": "acme:ticker/*", "max_members": 20},
    {"match": "acme:ticker/fx", "max_members": 1},
    {"match": "acme:t*", "max_members": 10},  # as specific as acme:ticker/*? fewer literals: no
]


async def test_the_most_specific_namespace_wins_and_unset_options_fall_back() -> None:
    config = _config(*RULES, history={"size": 7}, presence={"max_members": 9})
    async with running(config) as gw:
        want = {
            "acme:ticker/fx": "acme:ticker/fx",  # no wildcard beats every pattern
            "acme:ticker/eq": "acme:ticker/*",  # one *, longest literal prefix
            "acme:tape": "acme:t*",
            "acme:orders/1": "acme:*",
            "globex:ticker/fx": "*",  # one * beats the two of *:ticker/*
            "globex:orders/1": "*",
        }
        for address, namespace in want.items():
            status, body = await _channel(gw, address)
            assert status == 200, body
            options = body["options"]
            assert options["namespace"] == namespace, address
            assert (options["historySize"], options["presenceMaxMembers"]) == (7, 9)
        async with gw.peer("alice") as a, gw.peer("bob") as b:
            assert (await a.join("acme:ticker/fx"))["type"] == "@@wsgate/JOINED"
            refused = await b.join("acme:ticker/fx")  # max_members 1: the exact rule applied
            assert refused["payload"]["code"] == "TOO_LARGE"
            assert (await b.join("acme:ticker/eq"))["type"] == "@@wsgate/JOINED"


async def test_get_channel_shows_options_and_count_with_the_apis_key_check() -> None:
    config = _config({"match": "*:ticker/*", "conflate_ms": 250, "conflate_key": "payload.symbol"})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        await alice.join("acme:ticker/fx")
        await bob.join("acme:ticker/fx")
        status, body = await _channel(gw, "acme:ticker/fx")
        assert status == 200
        assert body["channel"] == "acme:ticker/fx" and body["count"] == 2
        assert body["options"] == {
            "namespace": "*:ticker/*", "historySize": 100, "historyTtlS": 300, "recovery": True,
            "presence": True, "presenceMaxMembers": 100, "relay": True, "maxMembers": 0,
            "conflateMs": 250, "conflateKey": "payload.symbol",
        }
        status, body = await _channel(gw, "acme:empty")
        assert status == 200 and body["count"] == 0 and body["options"]["namespace"] is None
        status, body = await _channel(gw, "acme")
        assert status == 400 and "error" in body
        status, body = await _channel(gw, "acme:ticker/fx", key="wrong")
        assert status == 401 and "error" in body
