"""Every guarantee of :mod:`wsgate.backends.base`, held against every cluster backend.

Each test runs once per backend (``backend_factory``); several nodes of one
test share a prefix. Every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.backends.conftest import Make, holds
from tests.helpers import eventually
from tests.helpers import eventually as eventually_async
from wsgate.backends.base import Backend, Delivery, Registration, RevocationStore
from wsgate.backends.revocations import open_revocations


async def node(make: Make, name: str, **kw: float) -> tuple[Backend, list[Delivery]]:
    backend = await make(name, **kw)  # type: ignore[arg-type]
    got: list[Delivery] = []
    await backend.broker.start(got.append)
    return backend, got


# Broker ----------------------------------------------------------------------


async def test_delivers_only_to_subscribed_nodes(backend_factory: Make) -> None:
    (a, got_a), (b, got_b), (c, got_c) = [await node(backend_factory, n) for n in "abc"]
    b.broker.subscribe("chan.x")
    await b.broker.flush()
    for i in range(3):
        a.broker.publish("chan.x", b"m%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got_b) == 3)
    # A sentinel on a subject C does hold arrives after anything stray would have.
    c.broker.subscribe("chan.c")
    await c.broker.flush()
    a.broker.publish("chan.c", b"sentinel")
    await eventually(lambda: len(got_c) == 1)
    assert [d.data for d in got_b] == [b"m0", b"m1", b"m2"]
    assert all(d.subject == "chan.x" and d.offset == 0 and d.prev == 0 for d in got_b)
    assert got_a == []
    assert [d.subject for d in got_c] == ["chan.c"]
    assert b.broker.received == {"chan.x": 3}
    assert a.broker.received == {}
    assert c.broker.received == {"chan.c": 1}


async def test_fifo_per_publisher_and_subject(backend_factory: Make) -> None:
    (a, _), (b, got) = [await node(backend_factory, n) for n in "ab"]
    b.broker.subscribe("chan.f")
    await b.broker.flush()
    for i in range(200):
        if i % 3 == 0:
            a.broker.publish_stream("chan.f", "f", b"%d" % i)
        else:
            a.broker.publish("chan.f", b"%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 200)
    assert [int(d.data) for d in got] == list(range(200))


async def test_several_subscribers_all_receive(backend_factory: Make) -> None:
    (a, _), (b, got_b), (c, got_c) = [await node(backend_factory, n) for n in "abc"]
    for n in (b, c):
        n.broker.subscribe("hub.h")
        await n.broker.flush()
    a.broker.publish("hub.h", b"x")
    await eventually(lambda: len(got_b) == len(got_c) == 1)


async def test_unsubscribe_stops_delivery(backend_factory: Make) -> None:
    (a, _), (b, got) = [await node(backend_factory, n) for n in "ab"]
    b.broker.subscribe("chan.u")
    b.broker.subscribe("chan.keep")
    await b.broker.flush()
    a.broker.publish("chan.u", b"1")
    await eventually(lambda: len(got) == 1)
    b.broker.unsubscribe("chan.u")
    await b.broker.flush()
    a.broker.publish("chan.u", b"2")
    await a.broker.flush()  # "2" reached the server before the sentinel is sent
    a.broker.publish("chan.keep", b"sentinel")
    await eventually(lambda: any(d.subject == "chan.keep" for d in got))
    assert [d.data for d in got] == [b"1", b"sentinel"]
    assert b.broker.received == {"chan.u": 1, "chan.keep": 1}


async def test_flush_makes_subscriptions_active_at_once(backend_factory: Make) -> None:
    (a, _), (b, got) = [await node(backend_factory, n) for n in "ab"]
    await asyncio.wait_for(a.broker.flush(), 2.0)  # idle: returns promptly
    for i in range(5):
        b.broker.subscribe(f"user.{i}")
    await asyncio.wait_for(b.broker.flush(), 2.0)
    # No sleep: after flush every subscription is live at the server.
    for i in range(5):
        a.broker.publish(f"user.{i}", b"hi")
    await asyncio.wait_for(a.broker.flush(), 2.0)
    await eventually(lambda: len(got) == 5)


# Streams and history ---------------------------------------------------------


async def test_stream_offsets_prev_chain_and_since(backend_factory: Make) -> None:
    (a, _), (b, got) = [await node(backend_factory, n, history_size=16) for n in "ab"]
    b.broker.subscribe("chan.s")
    await b.broker.flush()
    for i in range(6):
        a.broker.publish_stream("chan.s", "s", b"%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 6)
    offsets = [d.offset for d in got]
    assert offsets[0] > 0
    assert offsets == sorted(set(offsets))  # strictly increasing (not always contiguous)
    assert [d.prev for d in got[1:]] == offsets[:-1]  # each names the one before it
    assert 0 <= got[0].prev < offsets[0]
    first, top = offsets[0], offsets[-1]

    replay = await b.history.since("s", first - 1)
    assert replay.recovered and replay.top == top
    assert replay.entries == [(d.offset, d.data) for d in got]
    replay = await b.history.since("s", offsets[2])
    assert replay.recovered and [o for o, _ in replay.entries] == offsets[3:]
    replay = await b.history.since("s", top)
    assert replay == (True, [], top)
    assert (await b.history.since("s", top + 1)).recovered is False
    # 0 is "before the stream existed": recovered while nothing was evicted.
    assert await b.history.since("s", 0) == (True, [(d.offset, d.data) for d in got], top)
    assert await b.history.window("s") == (0, [(d.offset, d.data) for d in got], top)


async def test_since_reports_eviction_past_history_size(backend_factory: Make) -> None:
    a, _ = await node(backend_factory, "a")  # history_size = 4
    b, got = await node(backend_factory, "b")
    b.broker.subscribe("chan.e")
    await b.broker.flush()
    for i in range(10):
        a.broker.publish_stream("chan.e", "e", b"%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 10)
    top = got[-1].offset
    kept = await b.history.since("e", got[-5].offset)
    assert kept.recovered and kept.entries == [(d.offset, d.data) for d in got[-4:]]
    assert [d for _, d in kept.entries] == [b"6", b"7", b"8", b"9"]
    lost = await b.history.since("e", got[-6].offset)
    assert lost.recovered is False and lost.entries == [] and lost.top == top
    assert (await b.history.since("e", got[0].offset)).recovered is False
    assert (await b.history.since("e", 0)).recovered is False  # 0 after an eviction
    window = await b.history.window("e")
    assert window == (got[-5].offset, kept.entries, top)


async def test_unknown_stream(backend_factory: Make) -> None:
    a, _ = await node(backend_factory, "a")
    assert await a.history.since("nope", 0) == (True, [], 0)
    assert await a.history.since("nope", 42) == (False, [], 0)
    assert await a.history.window("nope") == (0, [], 0)


async def test_stream_expires_and_offsets_continue_above(backend_factory: Make) -> None:
    a, got = await node(backend_factory, "a", history_ttl_s=1.0)
    a.broker.subscribe("chan.t")
    await a.broker.flush()
    a.broker.publish_stream("chan.t", "t", b"old")
    await a.broker.flush()
    await eventually(lambda: len(got) == 1)
    old = got[0].offset
    assert (await a.history.since("t", old - 1)).recovered

    async def expired() -> bool:
        return (await a.history.since("t", old)).top == 0

    await eventually_async(expired, timeout=5.0)
    assert await a.history.since("t", old) == (False, [], 0)
    a.broker.publish_stream("chan.t", "t", b"new")
    await a.broker.flush()
    await eventually(lambda: len(got) == 2)
    assert got[1].offset > old
    assert old <= got[1].prev < got[1].offset
    # An offset of the earlier incarnation is never recovered; 0 still is.
    assert await a.history.since("t", old) == (False, [], got[1].offset)
    assert await a.history.since("t", 0) == (True, [(got[1].offset, b"new")], got[1].offset)


async def test_quiet_stream_is_freed_and_its_offsets_never_reused(backend_factory: Make) -> None:
    a, got = await node(backend_factory, "a", history_ttl_s=1.0)
    a.broker.subscribe("chan.fr")
    await a.broker.flush()
    for i in range(3):
        a.broker.publish_stream("chan.fr", "fr", b"old%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 3)
    old = [d.offset for d in got]
    assert await holds(a, "fr")

    async def freed() -> bool:
        # No append and no member for ttl: unknown to readers, and gone from storage.
        return await a.history.window("fr") == (0, [], 0) and not await holds(a, "fr")

    await eventually(freed, timeout=4.0, every=0.05, what="the quiet stream freed")  # ttl + slack
    assert await a.history.since("fr", old[-1]) == (False, [], 0)
    for i in range(3):
        a.broker.publish_stream("chan.fr", "fr", b"new%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 6)
    new = [d.offset for d in got[3:]]
    assert min(new) > max(old)  # a re-created stream never reuses an offset
    assert await a.history.since("fr", old[-1]) == (False, [], new[-1])
    assert await a.history.since("fr", 0) == (True, [(d.offset, d.data) for d in got[3:]], new[-1])


async def test_retention_is_bounded_by_max_channels_oldest_freed_first(
    backend_factory: Make,
) -> None:
    a, _ = await node(backend_factory, "a", history_size=2, history_max_channels=3)
    streams = [f"m{i}" for i in range(5)]
    for s in streams:  # each channel filled to history_size, one after the other
        for data in (b"1", b"2"):
            # One append at a time: NATS bounds stored messages, and appends that
            # queue up behind one in flight share one (docs/backends.md).
            a.broker.publish_stream(f"chan.{s}", s, data)
            await a.broker.flush()

    async def oldest_freed() -> bool:
        return not any([await holds(a, s) for s in streams[:2]])

    await eventually(oldest_freed, what="the two oldest streams freed")
    for s in streams[:2]:
        assert await a.history.window(s) == (0, [], 0)
    for s in streams[2:]:
        assert await holds(a, s)
        window = await a.history.window(s)
        assert window.base == 0 and [d for _, d in window.entries] == [b"1", b"2"]


async def test_offsets_are_per_channel(backend_factory: Make) -> None:
    (a, _), (b, got) = [await node(backend_factory, n, history_size=64) for n in "ab"]
    for s in ("busy", "quiet"):
        b.broker.subscribe(f"chan.{s}")
    await b.broker.flush()
    for i in range(30):
        a.broker.publish_stream("chan.busy", "busy", b"%d" % i)
    await a.broker.flush()
    before = time.time_ns() // 1000
    for i in range(5):
        a.broker.publish_stream("chan.quiet", "quiet", b"q%d" % i)
        a.broker.publish_stream("chan.busy", "busy", b"b%d" % i)
    await a.broker.flush()
    after = time.time_ns() // 1000
    await eventually(lambda: len(got) == 40)
    for s in ("busy", "quiet"):
        chain = [d for d in got if d.subject == f"chan.{s}"]
        first = chain[0].offset
        # Contiguous per channel, whatever the other channel sent in between.
        assert [d.offset for d in chain] == list(range(first, first + len(chain)))
        assert [d.prev for d in chain] == [d.offset - 1 for d in chain]
    quiet = [d for d in got if d.subject == "chan.quiet"]
    # A fresh channel's first offset is its creation epoch (microseconds) plus
    # one: it tells the time it was created, not how much others sent.
    assert before < quiet[0].offset <= after + 1


# Presence --------------------------------------------------------------------


async def test_presence_members_add_remove(backend_factory: Make) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    await a.presence.add("room", "a-1", "a", b'{"u":1}')
    await b.presence.add("room", "b-1", "b", b"")
    await b.presence.add("room", "b-2", "b", b"\x00\xff")
    assert await a.presence.members("room") == {
        "a-1": ("a", b'{"u":1}'), "b-1": ("b", b""), "b-2": ("b", b"\x00\xff")}
    await a.presence.remove("room", "b-1")
    await a.presence.remove("room", "never")
    assert set(await b.presence.members("room")) == {"a-1", "b-2"}
    assert await a.presence.members("empty") == {}


async def test_presence_heartbeats_dead_nodes_and_purge(backend_factory: Make) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    await a.presence.add("room", "a-1", "a", b"x")
    await a.presence.add("room", "a-2", "a", b"y")
    await b.presence.add("room", "b-1", "b", b"z")
    await a.presence.beat("a", 0.3)
    await b.presence.beat("b", 30.0)
    assert await b.presence.dead_nodes({"a", "b", "ghost"}) == {"ghost"}
    assert await b.presence.dead_nodes(set()) == set()

    async def a_dead() -> bool:
        return await b.presence.dead_nodes({"a", "b"}) == {"a"}

    await eventually_async(a_dead, timeout=3.0)
    assert sorted(await b.presence.purge("room", {"a"})) == ["a-1", "a-2"]
    assert await b.presence.purge("room", {"a"}) == []
    assert await b.presence.members("room") == {"b-1": ("b", b"z")}
    await b.presence.beat("a", 30.0)  # a node that comes back is alive again
    assert await b.presence.dead_nodes({"a"}) == set()


# Shared limits ---------------------------------------------------------------


async def test_acquire_burst_then_refusal_shared_by_nodes(backend_factory: Make) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    interval, burst = 0.5, 3
    tolerance = interval * (burst - 1)
    results = [await n.limits.acquire("k", interval, tolerance) for n in (a, b, a)]
    assert results == [0.0, 0.0, 0.0]
    wait = await b.limits.acquire("k", interval, tolerance)
    refused_at = time.monotonic()
    assert 0.0 < wait <= interval + 0.05
    assert await a.limits.acquire("other", interval, tolerance) == 0.0  # keys independent

    async def refilled() -> bool:  # a refused acquire takes nothing: safe to poll
        return await a.limits.acquire("k", interval, tolerance) == 0.0

    await eventually(refilled, timeout=2.0, every=0.02, what="a unit free again")
    assert time.monotonic() - refused_at >= wait - 0.05  # not before the wait it named


async def test_count_and_forget_node(backend_factory: Make) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    assert await a.limits.count("u:1", "a-1", "a", 1) == 1
    assert await a.limits.count("u:1", "a-2", "a", 1) == 2
    assert await b.limits.count("u:1", "b-1", "b", 1) == 3
    assert await b.limits.count("u:1", "b-1", "b", 1) == 3  # idempotent
    assert await a.limits.count("u:2", "a-3", "a", 1) == 1
    assert await b.limits.count("u:1", "a-2", "a", -1) == 2
    assert await b.limits.count("u:1", "a-2", "a", -1) == 2  # idempotent
    await b.limits.forget_node("a")
    assert await b.limits.count("u:1", "b-2", "b", 1) == 2  # b-1, b-2
    assert await b.limits.count("u:2", "x", "b", -1) == 0
    await b.limits.forget_node("ghost")


# Registry --------------------------------------------------------------------


async def test_registry_put_all_delete_expiry(backend_factory: Make) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    now = time.time()
    live = Registration("chat", "http://10.0.0.1:8000", ["send", "join"], now + 60)
    other = Registration("chat", "http://10.0.0.2:8000", ["send"], now + 60)
    dead = Registration("old", "http://10.0.0.3:8000", [], now - 1)
    for r in (live, other, dead):
        await a.registry.put(r)
    assert sorted(await b.registry.all()) == sorted([live, other])
    renewed = live._replace(expires_at=now + 120)
    await b.registry.put(renewed)
    assert sorted(await a.registry.all()) == sorted([renewed, other])
    await b.registry.delete("chat", "http://10.0.0.2:8000")
    await b.registry.delete("none", "http://x")
    assert await a.registry.all() == [renewed]
    soon = Registration("brief", "http://10.0.0.4:8000", ["a"], time.time() + 0.2)
    await a.registry.put(soon)
    assert soon in await b.registry.all()

    async def soon_expired() -> bool:
        return await b.registry.all() == [renewed]

    await eventually(soon_expired, timeout=3.0, every=0.02, what="the brief registration expired")


# Revocations -----------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "nats"])
async def revocation_stores(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[float], Awaitable[RevocationStore]]]:
    """Opens stores of one prefix (as several nodes would); closes them after the test."""
    kind: str = request.param
    url = "memory://rev" if kind == "memory" else request.getfixturevalue(f"{kind}_proc").url
    prefix = f"t{uuid.uuid4().hex[:12]}"
    opened: list[RevocationStore] = []

    async def make(ttl_s: float) -> RevocationStore:
        store = await asyncio.wait_for(open_revocations(url, prefix=prefix, ttl_s=ttl_s), 10.0)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_revocations_are_shared_merged_and_expire(
    revocation_stores: Callable[[float], Awaitable[RevocationStore]],
) -> None:
    a, b = await revocation_stores(30.0), await revocation_stores(30.0)
    assert await a.all() == {}
    await a.put("sid:s-1", 100.0, 30.0)
    await a.put("user:ann", 200.0, 30.0)
    assert await b.all() == {"sid:s-1": 100.0, "user:ann": 200.0}
    await b.put("user:ann", 150.0, 30.0)  # an earlier "not before" never wins
    await b.put("user:ann", 250.0, 30.0)
    assert (await a.all())["user:ann"] == 250.0
    await a.put("user:brief/ü.x", 300.0, 1.0)  # any characters in a user id
    assert (await b.all())["user:brief/ü.x"] == 300.0

    async def gone() -> bool:
        return "user:brief/ü.x" not in await b.all()

    await eventually_async(gone, timeout=4.0, what="the brief revocation expired")
    assert set(await a.all()) == {"sid:s-1", "user:ann"}


async def test_an_inbox_stream_is_a_stream_like_a_channel_s(backend_factory: Make) -> None:
    """The personal inbox (wsgate.core.inbox) names a user's stream ``@inbox:<user id>``
    and publishes it on ``chan.<stream>``: every backend stores, delivers and replays it."""
    from wsgate.core.inbox import stream_of

    (a, _), (b, got) = [await node(backend_factory, n, history_size=16) for n in "ab"]
    stream = stream_of("a@b.example")
    b.broker.subscribe(f"chan.{stream}")
    await b.broker.flush()
    for i in range(3):
        a.broker.publish_stream(f"chan.{stream}", stream, b"%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 3)
    assert [d.data for d in got] == [b"0", b"1", b"2"]
    window = await b.history.window(stream)
    assert window.entries == [(d.offset, d.data) for d in got]
    replay = await b.history.since(stream, got[0].offset)
    assert replay.recovered and [o for o, _ in replay.entries] == [d.offset for d in got[1:]]
    assert (await b.history.window(stream_of("someone else"))).entries == []


# Inboxes: bounded by [inbox], apart from channels' history -------------------


async def test_a_flood_of_one_inbox_does_not_evict_a_channel_s_history(
    backend_factory: Make,
) -> None:
    """Inboxes are stored apart from channels (NATS: a stream of their own), so a
    busy user never pushes a channel's history out, whatever the channel bounds."""
    from wsgate.core.inbox import stream_of

    a, _ = await node(backend_factory, "a", history_size=4, history_max_channels=1)
    for data in (b"c1", b"c2"):
        a.broker.publish_stream("chan.keep", "keep", data)
        await a.broker.flush()
    stream = stream_of("flooder")
    for i in range(12):  # one append at a time: each its own stored message on NATS
        a.broker.publish_stream(f"chan.{stream}", stream, b"%d" % i)
        await a.broker.flush()
    window = await a.history.window("keep")
    assert window.base == 0 and [d for _, d in window.entries] == [b"c1", b"c2"]
    assert (await a.history.window(stream)).entries  # the inbox holds its latest


async def test_an_inbox_keeps_inbox_size_not_history_size(backend_factory: Make) -> None:
    from wsgate.core.inbox import stream_of

    a, got = await node(backend_factory, "a", history_size=16, inbox_size=3)
    stream = stream_of("bounded")
    a.broker.subscribe(f"chan.{stream}")
    await a.broker.flush()
    for i in range(5):
        a.broker.publish_stream(f"chan.{stream}", stream, b"%d" % i)
        await a.broker.flush()
        a.broker.publish_stream("chan.wide", "wide", b"%d" % i)  # a channel beside it
        await a.broker.flush()
    await eventually(lambda: len(got) == 5)
    window = await a.history.window(stream)
    assert window == (got[1].offset, [(d.offset, d.data) for d in got[2:]], got[-1].offset)
    assert (await a.history.since(stream, got[1].offset)).recovered
    assert not (await a.history.since(stream, got[0].offset)).recovered
    assert [d for _, d in (await a.history.window("wide")).entries] == [b"%d" % i for i in range(5)]


async def test_an_inbox_expires_inbox_ttl_after_its_last_append(backend_factory: Make) -> None:
    from wsgate.core.inbox import stream_of

    a, _ = await node(backend_factory, "a", history_ttl_s=30.0, inbox_ttl_s=1.0)
    stream = stream_of("brief")
    a.broker.publish_stream(f"chan.{stream}", stream, b"gone soon")
    a.broker.publish_stream("chan.stays", "stays", b"kept")
    await a.broker.flush()
    assert await holds(a, stream)

    async def freed() -> bool:
        return await a.history.window(stream) == (0, [], 0) and not await holds(a, stream)

    await eventually(freed, timeout=4.0, every=0.05, what="the inbox freed")  # ttl + slack
    assert [d for _, d in (await a.history.window("stays")).entries] == [b"kept"]
    assert await holds(a, "stays")


async def test_inboxes_are_bounded_by_max_users_apart_from_channels(backend_factory: Make) -> None:
    from wsgate.core.inbox import stream_of

    a, _ = await node(
        backend_factory, "a", history_size=2, history_max_channels=1, inbox_size=2,
        inbox_max_users=3,
    )
    a.broker.publish_stream("chan.solo", "solo", b"c")
    await a.broker.flush()
    users = [stream_of(f"u{i}") for i in range(5)]
    for s in users:  # each inbox filled to inbox_size, one append at a time (NATS)
        for data in (b"1", b"2"):
            a.broker.publish_stream(f"chan.{s}", s, data)
            await a.broker.flush()

    async def oldest_freed() -> bool:
        return not any([await holds(a, s) for s in users[:2]])

    await eventually(oldest_freed, what="the two oldest inboxes freed")
    for s in users[2:]:
        window = await a.history.window(s)
        assert window.base == 0 and [d for _, d in window.entries] == [b"1", b"2"]
    assert [d for _, d in (await a.history.window("solo")).entries] == [b"c"]
