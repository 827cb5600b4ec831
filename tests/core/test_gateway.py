"""The core without sockets: welcome, join, presence, relay, navigate, errors."""

from __future__ import annotations

import gc
import tracemalloc

from wsgate.config import ChannelRule
from wsgate.core.delivery import Delivery, TargetKind

from .harness import Harness


def types(actions: list[dict]) -> list[str]:
    return [a["type"] for a in actions]


def test_welcome_lists_hubs_and_identity() -> None:
    h = Harness()
    alice = h.connect("alice")
    (welcome,) = alice.take()
    assert welcome["type"] == "@@wsgate/WELCOME"
    p = welcome["payload"]
    assert p["connectionId"].startswith("n1.")
    assert p["userId"] == "alice"
    assert set(p["hubs"]) == {"system", "public", "acme"}
    assert p["node"] == "n1"
    assert p["heartbeatMs"] == 25000


def test_join_answers_joined_with_members_and_presence_reaches_others() -> None:
    h = Harness()
    alice, bob = h.connect("alice"), h.connect("bob")
    alice.take(), bob.take()
    (joined,) = alice.join("acme:orders/42")
    assert joined["type"] == "@@wsgate/JOINED"
    assert joined["meta"]["inReplyTo"] == "j"
    assert joined["payload"]["count"] == 1
    assert [m["userId"] for m in joined["payload"]["members"]] == ["alice"]
    (joined,) = bob.join("acme:orders/42")
    assert {m["userId"] for m in joined["payload"]["members"]} == {"alice", "bob"}
    (presence,) = alice.take()
    assert presence["type"] == "@@wsgate/PRESENCE"
    assert presence["payload"]["joined"][0]["connectionId"] == bob.id
    assert presence["payload"]["count"] == 2
    assert bob.take() == []  # no diff about yourself
    bob.close()
    (presence,) = alice.take()
    assert presence["payload"]["left"][0]["userId"] == "bob"
    assert presence["payload"]["count"] == 1


def test_presence_is_batched_per_channel_window() -> None:
    h = Harness(batch_ms=50)
    alice = h.connect("alice")
    alice.join("acme:v")
    h.clock.advance(1)  # alice's own join goes out in its own window
    others = [h.connect(f"u{i}") for i in range(5)]
    for c in others:
        c.join("acme:v")
    others[0].close()  # joined and left in one window, but u1..u4's JOINED listed u0
    alice.take()
    h.clock.advance(0.049)
    assert alice.take() == []
    h.clock.advance(0.002)
    (presence,) = alice.take()
    assert {m["userId"] for m in presence["payload"]["joined"]} == {"u1", "u2", "u3", "u4"}
    assert [m["userId"] for m in presence["payload"]["left"]] == ["u0"]
    assert presence["payload"]["count"] == 5


def test_large_channel_presence_carries_count_only() -> None:
    h = Harness(batch_ms=50, max_members=3)
    first = h.connect("first")
    first.join("acme:big")
    for i in range(10):
        h.connect(f"u{i}").join("acme:big")
    late = h.connect("late")
    (joined,) = late.join("acme:big")
    assert "members" not in joined["payload"]
    assert joined["payload"]["count"] == 12
    first.take()
    h.clock.advance(1.0)
    presences = [a for a in first.take() if a["type"] == "@@wsgate/PRESENCE"]
    assert len(presences) == 1
    assert presences[0]["payload"] == {"channel": "acme:big", "joined": [], "left": [], "count": 12}


def test_relay_reaches_other_members_with_from_and_skips_sender() -> None:
    h = Harness()
    alice, bob, carol = h.connect("alice"), h.connect("bob"), h.connect("carol")
    alice.join("acme:orders/42")
    bob.join("acme:orders/42")
    carol.join("acme:orders/43")
    for c in (alice, bob, carol):
        c.take()
    echo = alice.send("chat/MESSAGE", {"text": "hi"}, channel="acme:orders/42")
    assert echo == []
    (got,) = bob.take()
    assert got["type"] == "chat/MESSAGE"
    assert got["payload"] == {"text": "hi"}
    assert got["meta"]["from"] == {"userId": "alice", "connectionId": alice.id}
    assert got["meta"]["channel"] == "acme:orders/42"
    assert got["meta"]["offset"] >= 1
    assert carol.take() == []
    mine = alice.send("chat/MESSAGE", {"text": "me too"}, channel="acme:orders/42", echo=True)
    assert types(mine) == ["chat/MESSAGE"]


def test_relay_errors_keep_the_connection_open() -> None:
    h = Harness()
    alice = h.connect("alice")
    alice.take()
    (err,) = alice.send("chat/MESSAGE", {"text": "x"}, channel="acme:elsewhere", id="m1")
    assert err["error"] is True
    assert err["payload"]["code"] == "NOT_JOINED"
    assert err["meta"]["inReplyTo"] == "m1"
    (err,) = alice.send("chat/MESSAGE", {"text": "x"}, id="m2")
    assert err["payload"]["code"] == "BAD_REQUEST"
    (err,) = alice.send("orders/UPDATE", {}, id="m3")
    assert err["payload"]["code"] == "NO_ROUTE"
    (err,) = alice.send("@@wsgate/NOPE", id="m4")
    assert err["payload"]["code"] == "NO_ROUTE"
    (pong,) = alice.send("@@wsgate/PING", {"t": 1}, id="p")
    assert pong == {"type": "@@wsgate/PONG", "payload": {"t": 1}, "meta": {"inReplyTo": "p"}}


def test_malformed_input_answers_bad_request_or_too_large() -> None:
    h = Harness()
    alice = h.connect("alice")
    alice.take()
    for data, code in [
        (b"not json", "BAD_REQUEST"),
        (b"[1,2]", "BAD_REQUEST"),
        (b'{"payload": 1}', "BAD_REQUEST"),
        (b'{"type": "has space"}', "BAD_REQUEST"),
        (b'{"type": "' + b"a" * 129 + b'"}', "BAD_REQUEST"),
        (b'{"type": "x", "extra": 1}', "BAD_REQUEST"),
        (b'{"type": "x", "meta": {"id": "' + b"i" * 65 + b'"}}', "TOO_LARGE"),
        (
            b'{"type": "@@wsgate/JOIN", "payload": {"chan": "x"}, "meta": {"id": "q"}}',
            "BAD_REQUEST",
        ),
    ]:
        (err,) = alice.raw(data)
        assert err["type"] == "@@wsgate/ERROR", data
        assert err["payload"]["code"] == code, data
    (err,) = alice.raw(b'{"type": "bad type", "meta": {"id": "r9"}}')
    assert err["meta"]["inReplyTo"] == "r9"
    alice.conn.on_binary()
    assert alice.take()[0]["payload"]["code"] == "BAD_REQUEST"


def test_join_refusals() -> None:
    h = Harness(rules=[ChannelRule(match="*:admin/*", roles=["admin"])], max_channels=2)
    alice = h.connect("alice")
    boss = h.connect("boss", roles=("admin",))
    alice.take()
    assert alice.join("globex:orders/1")[0]["payload"]["code"] == "FORBIDDEN"
    assert alice.join("acme:admin/panel")[0]["payload"]["code"] == "FORBIDDEN"
    assert boss.join("acme:admin/panel")[-1]["type"] == "@@wsgate/JOINED"
    assert alice.join("no spaces allowed")[0]["payload"]["code"] == "BAD_REQUEST"
    assert alice.join("acme")[0]["payload"]["code"] == "BAD_REQUEST"
    assert alice.join("acme:a")[0]["type"] == "@@wsgate/JOINED"
    assert alice.join("acme:b")[0]["type"] == "@@wsgate/JOINED"
    assert alice.join("acme:a")[0]["type"] == "@@wsgate/JOINED"  # idempotent
    assert alice.join("acme:c")[0]["payload"]["code"] == "TOO_LARGE"
    (err,) = alice.send("@@wsgate/LEAVE", {"channel": "acme:zzz"}, id="l")
    assert err["payload"]["code"] == "NOT_JOINED"
    (left,) = alice.send("@@wsgate/LEAVE", {"channel": "acme:a"}, id="l")
    assert left["type"] == "@@wsgate/LEFT"
    assert left["meta"]["inReplyTo"] == "l"


def test_navigate_leaves_the_previous_view_of_that_hub() -> None:
    h = Harness()
    alice, bob = h.connect("alice"), h.connect("bob")
    bob.join("acme:orders/42")
    got = alice.send("@@wsgate/NAVIGATE", {"view": "orders/42"}, id="n1")
    assert types(got) == ["@@wsgate/JOINED"]
    assert got[0]["payload"]["channel"] == "acme:orders/42"
    alice.join("acme:sidebar")  # a plain JOIN is kept across navigation
    bob.take()
    got = alice.send("@@wsgate/NAVIGATE", {"view": "orders/43"}, id="n2")
    assert types(got) == ["@@wsgate/LEFT", "@@wsgate/JOINED"]
    assert got[0]["payload"]["channel"] == "acme:orders/42"
    assert alice.conn.channels == {"acme:orders/43", "acme:sidebar"}
    (presence,) = bob.take()
    assert presence["payload"]["left"][0]["userId"] == "alice"
    (err,) = alice.send("@@wsgate/NAVIGATE", {"view": "x", "hub": "globex"}, id="n3")
    assert err["payload"]["code"] == "FORBIDDEN"
    assert "acme:orders/43" in alice.conn.channels


def test_all_tabs_of_a_user_are_tracked_together() -> None:
    h = Harness()
    tabs = [h.connect("alice") for _ in range(3)]
    h.connect("bob")
    assert set(h.gw.pool.users["alice"]) == {t.id for t in tabs}
    for t in tabs:
        t.take()
    assert h.gw.fanout.send(Delivery(TargetKind.USER, "alice", "note/NEW", {"n": 1})) == 3
    assert all(types(t.take()) == ["note/NEW"] for t in tabs)
    tabs[0].close()
    assert len(h.gw.pool.users["alice"]) == 2
    for t in tabs[1:]:
        t.close()
    assert "alice" not in h.gw.pool.users


def test_history_recovers_missed_actions_with_since() -> None:
    h = Harness(history=3)
    alice, bob = h.connect("alice"), h.connect("bob")
    alice.join("acme:v")
    (joined,) = bob.join("acme:v")
    start = joined["payload"]["offset"]
    for i in range(2):
        alice.send("chat/MESSAGE", {"i": i}, channel="acme:v")
    got = bob.join("acme:v", since=start)
    assert got[0]["payload"]["recovered"] is True
    assert [a["payload"]["i"] for a in got[1:]] == [0, 1]
    for i in range(2, 6):
        alice.send("chat/MESSAGE", {"i": i}, channel="acme:v")
    got = bob.join("acme:v", since=start)
    assert got[0]["payload"]["recovered"] is False
    assert len(got) == 1
    last = got[0]["payload"]["offset"]
    got = bob.join("acme:v", since=last)
    assert got[0]["payload"]["recovered"] is True and len(got) == 1


def test_history_outlives_the_last_member_for_recovery() -> None:
    h = Harness()
    alice, bob = h.connect("alice"), h.connect("bob")
    alice.join("acme:v")
    (joined,) = bob.join("acme:v")
    offset = joined["payload"]["offset"]
    bob.close()
    alice.send("chat/MESSAGE", {"n": 1}, channel="acme:v")
    alice.close()
    back = h.connect("bob")
    got = back.join("acme:v", since=offset)
    assert got[0]["payload"]["recovered"] is True
    assert [a["payload"] for a in got[1:]] == [{"n": 1}]


def test_ten_thousand_join_leave_cycles_return_to_baseline() -> None:
    h = Harness(batch_ms=50)
    alice = h.connect("alice")
    watcher = h.connect("watcher")
    watcher.join("acme:lobby")

    def cycle(start: int, n: int) -> None:
        for i in range(start, start + n):
            alice.join(f"acme:view/{i}")
            alice.send("@@wsgate/LEAVE", {"channel": f"acme:view/{i}"})
            alice.send("@@wsgate/NAVIGATE", {"view": f"nav/{i}"})
        h.clock.advance(1)
        alice.take()

    cycle(0, 200)  # warm caches and interned strings
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    cycle(200, 10_000)
    alice.send("@@wsgate/LEAVE", {"channel": "acme:nav/10199"})
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert h.gw.pool.channel_count() == 1  # the watcher's lobby
    assert len(h.history) == 1
    assert h.clock.pending == 0
    assert growth < 64 * 1024, growth


def test_navigate_with_since_recovers_like_join() -> None:
    h = Harness()
    alice, bob = h.connect("alice"), h.connect("bob")
    alice.join("acme:v")
    (joined,) = bob.send("@@wsgate/NAVIGATE", {"view": "v"}, id="n")
    offset = joined["payload"]["offset"]
    bob.close()
    alice.send("chat/MESSAGE", {"n": 1}, channel="acme:v")
    back = h.connect("bob")
    got = back.send("@@wsgate/NAVIGATE", {"view": "v", "since": offset}, id="n")
    assert got[0]["payload"]["recovered"] is True
    assert [a["payload"] for a in got[1:]] == [{"n": 1}]


def test_tabs_share_their_address_and_hubs() -> None:
    """Memory per idle connection: equal peer addresses and equal hub lists are one
    object each, not one per connection (bench/README.md, idle memory)."""
    h = Harness()
    ip = ".".join(["10", "0", "0", str(7)])  # built at run time, like a socket's peername
    a = h.connect("alice", ip=ip)
    b = h.connect("alice", ip=".".join(["10", "0", "0", str(7)]))
    c = h.connect("bob", org="other", ip=ip)
    assert a.conn.peer is b.conn.peer
    assert a.conn.hubs is b.conn.hubs
    assert c.conn.hubs != a.conn.hubs
    assert set(a.conn.hubs) == {"system", "public", "acme"}


def test_shared_hub_lists_are_bounded() -> None:
    from wsgate.core.gateway import MAX_SHARED_HUB_LISTS

    h = Harness()
    for i in range(MAX_SHARED_HUB_LISTS + 50):
        h.connect(f"u{i}", org=f"org{i}").close()
    assert len(h.gw._hub_lists) <= MAX_SHARED_HUB_LISTS
    d = h.connect("dana", org="org5")
    assert set(d.conn.hubs) == {"system", "public", "org5"}


def test_connected_at_is_the_sinks_handshake_time_not_a_float_of_its_own() -> None:
    # Memory per idle connection (bench/README.md): the transport's sink already
    # holds the upgrade's time; the connection shares that object.
    h = Harness()
    client = h.connect("u1")
    assert client.conn.connected_at is client.sink.last_active
