"""What only the NATS backend has: its naming, its JetStream offsets, server restarts.

Each test opens its backends under a prefix of its own on one ``nats-server
-js`` per module (never the machine's own NATS).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import eventually as until
from tests.servers import NATS_SERVER, ServerProcess, nats_server
from wsgate.backends.base import Delivery, Registration, StreamReplay
from wsgate.backends.nats import NatsBackend, open_nats
from wsgate.backends.nats_names import Names, decode_token, encode_token, stream_base_name

pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason="no nats-server")

_TOKEN = re.compile(r"^[A-Za-z0-9_=-]+$")
_ids = itertools.count()


# Naming ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["acme:orders/42", "a.b.c", "user@example.com", "k=v", "", "=", "*", ">", "a b\tc",
     "ünïcödé/✓", "plain", "=3A", "with-dash_and_underscore"],
)
def test_token_round_trips(text: str) -> None:
    token = encode_token(text)
    assert _TOKEN.match(token)
    assert decode_token(token) == text


@given(st.text())
def test_token_round_trips_any_text(text: str) -> None:
    token = encode_token(text)
    assert _TOKEN.match(token)
    assert decode_token(token) == text


@pytest.mark.parametrize(
    "logical",
    ["node.n1", "chan.acme:orders/42", "hub.acme", "user.u7", "user.a@b.example=1",
     "chan.x.y.z", "bare", "chan.", "chan.a b*>"],
)
def test_subject_round_trips(logical: str) -> None:
    names = Names("test.prefix")
    subject = names.subject(logical)
    tokens = subject.split(".")
    assert all(_TOKEN.match(t) for t in tokens)
    assert tokens[0] == names.root and tokens[1] == "msg"
    assert names.logical(subject) == logical


def test_prefixes_never_nest_and_streams_differ() -> None:
    a, b = Names("a"), Names("a.msg")
    assert a.subject("chan.x").split(".")[0] != b.subject("chan.x").split(".")[0]
    assert stream_base_name("a.b") != stream_base_name("a_b")
    assert re.match(r"^[A-Za-z0-9_-]+$", stream_base_name("wsgate test: ünï/1"))


# Fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with nats_server() as s:
        yield s


@pytest.fixture
async def open_node(server: ServerProcess) -> AsyncIterator[Callable[..., object]]:
    prefix = f"t{next(_ids)}.{time.monotonic_ns()}"
    opened: list[NatsBackend] = []

    async def open_(node: str = "n1", *, size: int = 10, ttl: float = 30.0) -> NatsBackend:
        backend = await open_nats(
            server.url, prefix=prefix, node=node, history_size=size, history_ttl_s=ttl
        )
        opened.append(backend)
        return backend

    yield open_
    for backend in opened:
        await backend.close()


async def started(backend: NatsBackend) -> list[Delivery]:
    got: list[Delivery] = []
    await backend.broker.start(got.append)
    return got


# Broker and history ------------------------------------------------------------


async def test_delivery_between_nodes_with_logical_subjects(open_node) -> None:  # type: ignore[no-untyped-def]
    a, b = await open_node("n1"), await open_node("n2")
    got_a, got_b = await started(a), await started(b)
    b.broker.subscribe("chan.acme:orders/42")
    await b.broker.flush()
    a.broker.publish("chan.acme:orders/42", b"one")
    a.broker.publish_stream("chan.acme:orders/42", "acme:orders/42", b"two")
    a.broker.publish("chan.acme:orders/42", b"three")
    await until(lambda: len(got_b) == 3)
    assert [d.data for d in got_b] == [b"one", b"two", b"three"]
    assert all(d.subject == "chan.acme:orders/42" for d in got_b)
    assert got_b[0].offset == 0 and got_b[2].offset == 0
    assert got_b[1].offset > 1_000_000_000  # the stream starts at "now" in microseconds
    assert got_b[1].prev == got_b[1].offset - 1  # a stream's first message
    assert got_a == [] and b.broker.received == {"chan.acme:orders/42": 3}
    b.broker.unsubscribe("chan.acme:orders/42")
    b.broker.subscribe("chan.sentinel")
    await b.broker.flush()
    a.broker.publish("chan.acme:orders/42", b"late")
    await a.broker.flush()
    # Sent after "late" on the same connection: routed after it would have been.
    a.broker.publish("chan.sentinel", b"s")
    await until(lambda: len(got_b) == 4)
    assert [d.data for d in got_b[3:]] == [b"s"]


async def test_prev_chain_is_exact_with_racing_publishers(open_node) -> None:  # type: ignore[no-untyped-def]
    a, b, c = await open_node("n1"), await open_node("n2"), await open_node("n3")
    got = await started(c)
    await started(a), await started(b)
    c.broker.subscribe("chan.race")
    await c.broker.flush()
    for i in range(20):
        a.broker.publish_stream("chan.race", "race", b"a%d" % i)
        b.broker.publish_stream("chan.race", "race", b"b%d" % i)
        a.broker.publish_stream("chan.other", "other", b"x")  # interleaves global sequences
    await a.broker.flush()
    await b.broker.flush()
    await until(lambda: len(got) == 40)
    chain = sorted(got, key=lambda d: d.offset)
    for before, after in itertools.pairwise(chain):
        assert after.prev == before.offset == after.offset - 1  # one counter, no gaps
    assert (await c.history.since("race", chain[0].offset)).recovered is False  # size 10
    last = chain[-11]
    replay = await c.history.since("race", last.offset)
    assert replay == StreamReplay(True, [(d.offset, d.data) for d in chain[-10:]], chain[-1].offset)


async def test_since_matches_the_memory_reference(open_node) -> None:  # type: ignore[no-untyped-def]
    a = await open_node(size=3)
    got = await started(a)
    a.broker.subscribe("chan.s")
    await a.broker.flush()
    assert await a.history.since("s", 0) == StreamReplay(True, [], 0)
    assert await a.history.since("s", 7) == StreamReplay(False, [], 0)
    for i in range(5):
        a.broker.publish_stream("chan.s", "s", b"%d" % i)
    await a.broker.flush()
    await until(lambda: len(got) == 5)
    offs = [d.offset for d in got]
    top = offs[-1]
    assert await a.history.since("s", top) == StreamReplay(True, [], top)
    assert await a.history.since("s", top + 1) == StreamReplay(False, [], top)
    assert await a.history.since("s", offs[1]) == StreamReplay(
        True, [(o, b"%d" % i) for i, o in enumerate(offs) if i > 1], top
    )
    assert await a.history.since("s", offs[0]) == StreamReplay(False, [], top)  # evicted
    assert await a.history.since("s", 0) == StreamReplay(False, [], top)
    assert await a.history.window("s") == (offs[1], [(o, b"%d" % i) for i, o in enumerate(offs) if i > 1], top)
    assert await a.history.window("unknown") == (0, [], 0)


async def test_history_expires(open_node) -> None:  # type: ignore[no-untyped-def]
    a = await open_node(ttl=1.0)
    got = await started(a)
    a.broker.subscribe("chan.e")
    await a.broker.flush()
    a.broker.publish_stream("chan.e", "e", b"x")
    await a.broker.flush()
    await until(lambda: len(got) == 1)
    assert (await a.history.since("e", got[0].prev)).recovered

    async def expired() -> bool:
        return await a.history.since("e", got[0].offset) == StreamReplay(False, [], 0)

    await until(expired, timeout=4.0)  # the server removed it (max_age = ttl)
    assert await a.history.since("e", 0) == StreamReplay(True, [], 0)
    a.broker.publish_stream("chan.e", "e", b"y")
    await until(lambda: len(got) == 2)
    assert got[1].offset > got[0].offset  # never reused after expiry
    # A new epoch: its first prev is its own epoch, which no node holds as a
    # top, so a node that saw "x" detects the gap; history never recovers "x".
    assert got[1].prev == got[1].offset - 1 > got[0].offset
    assert await a.history.since("e", got[0].offset) == StreamReplay(False, [], got[1].offset)
    assert await a.history.since("e", 0) == StreamReplay(True, [(got[1].offset, b"y")], got[1].offset)


async def test_publish_while_disconnected_is_lost_not_queued(open_node, server) -> None:  # type: ignore[no-untyped-def]
    a = await open_node()
    await started(a)
    server.stop()
    try:
        await until(lambda: not a.nc.is_connected)
        a.broker.publish("chan.x", b"gone")
        a.broker.publish_stream("chan.x", "x", b"gone")
        await until(lambda: a.broker.lost == 2)
    finally:
        server.start()
    await until(lambda: a.nc.is_connected, timeout=10)


async def test_restart_resumes_delivery_and_keeps_history(open_node, server) -> None:  # type: ignore[no-untyped-def]
    a, b = await open_node("n1"), await open_node("n2")
    await started(a)
    got = await started(b)
    b.broker.subscribe("chan.r")
    await b.broker.flush()
    a.broker.publish_stream("chan.r", "r", b"before")
    await until(lambda: len(got) == 1)
    await asyncio.to_thread(server.restart)
    await until(lambda: a.nc.is_connected and b.nc.is_connected, timeout=10)
    await b.broker.flush()
    await a.broker.flush()
    a.broker.publish_stream("chan.r", "r", b"after")
    a.broker.publish("chan.r", b"plain")
    await until(lambda: len(got) == 3)
    assert [d.data for d in got] == [b"before", b"after", b"plain"]
    assert got[1].prev == got[0].offset
    replay = await b.history.since("r", got[0].prev)
    assert replay == StreamReplay(True, [(got[0].offset, b"before"), (got[1].offset, b"after")], got[1].offset)
    assert await b.presence.dead_nodes({"n1"}) == {"n1"}


# State stores ------------------------------------------------------------------


async def test_presence(open_node) -> None:  # type: ignore[no-untyped-def]
    a, b = await open_node("n1"), await open_node("n2")
    await a.presence.add("acme:orders/42", "n1.c1", "n1", b"m1")
    await b.presence.add("acme:orders/42", "n2.c2", "n2", b"m2")
    await b.presence.add("acme:other", "n2.c3", "n2", b"m3")
    assert await a.presence.members("acme:orders/42") == {
        "n1.c1": ("n1", b"m1"), "n2.c2": ("n2", b"m2")
    }
    await a.presence.remove("acme:orders/42", "n1.c1")
    await a.presence.remove("acme:orders/42", "never")
    assert await b.presence.members("acme:orders/42") == {"n2.c2": ("n2", b"m2")}
    await a.presence.beat("n1", 30)
    await b.presence.beat("n2", 0.3)
    assert await a.presence.dead_nodes({"n1", "n2", "n9"}) == {"n9"}

    async def n2_dead() -> bool:
        return await a.presence.dead_nodes({"n1", "n2", "n9"}) == {"n2", "n9"}

    await until(n2_dead, timeout=3.0)
    assert await a.presence.purge("acme:orders/42", {"n2"}) == ["n2.c2"]
    assert await a.presence.members("acme:orders/42") == {}
    assert await a.presence.members("acme:other") == {"n2.c3": ("n2", b"m3")}


async def test_acquire_is_atomic_across_nodes(open_node) -> None:  # type: ignore[no-untyped-def]
    nodes = [await open_node(f"n{i}") for i in range(3)]
    interval, burst = 10.0, 5
    results = await asyncio.gather(
        *(n.limits.acquire("user:u7", interval, interval * (burst - 1)) for n in nodes for _ in range(4))
    )
    assert sum(r == 0.0 for r in results) == burst
    assert all(0 < r <= interval for r in results if r)


async def test_count_and_forget_node(open_node) -> None:  # type: ignore[no-untyped-def]
    a = await open_node()
    assert await a.limits.count("conns:u7", "n1.c1", "n1", 1) == 1
    assert await a.limits.count("conns:u7", "n1.c2", "n1", 1) == 2
    assert await a.limits.count("conns:u7", "n2.c3", "n2", 1) == 3
    assert await a.limits.count("conns:u8", "n1.c4", "n1", 1) == 1
    assert await a.limits.count("conns:u7", "n1.c2", "n1", -1) == 2
    await a.limits.forget_node("n1")
    assert await a.limits.count("conns:u7", "n2.c5", "n2", 1) == 2
    assert await a.limits.count("conns:u8", "n2.c6", "n2", 1) == 1


async def test_registry(open_node) -> None:  # type: ignore[no-untyped-def]
    a, b = await open_node("n1"), await open_node("n2")
    live = Registration("orders", "http://o:1/x.y", ["orders/*"], time.time() + 60)
    stale = Registration("old", "http://old", ["old/*"], time.time() - 1)
    await a.registry.put(live)
    await a.registry.put(stale)
    assert await b.registry.all() == [live]
    await b.registry.delete("orders", "http://o:1/x.y")
    assert await a.registry.all() == []


# RePublish: one stored, acked message per stream publish ---------------------


async def test_stream_publish_is_one_message_and_one_ack(open_node) -> None:  # type: ignore[no-untyped-def]
    a, b = await open_node("n1"), await open_node("n2")
    await started(a)
    got = await started(b)
    b.broker.subscribe("chan.one")
    await b.broker.flush()
    a.broker.publish_stream("chan.one", "one", b"first")  # reads the (empty) channel once
    await until(lambda: len(got) == 1)
    await a.broker.flush()
    out0, in0 = a.nc.stats["out_msgs"], a.nc.stats["in_msgs"]
    for i in range(20):  # one at a time: nothing queues up behind an append
        a.broker.publish_stream("chan.one", "one", b"%d" % i)
        await a.broker.flush()
    await until(lambda: len(got) == 21)
    # Per append: the publish (no read back) and its ack; flush() adds a PING.
    assert a.nc.stats["out_msgs"] - out0 == 20
    assert a.nc.stats["in_msgs"] - in0 == 20
    assert [int(d.data) for d in got[1:]] == list(range(20))
    assert all(d.prev == d.offset - 1 for d in got)


async def test_a_burst_goes_out_in_batches(open_node) -> None:  # type: ignore[no-untyped-def]
    """Appends that queue up behind one in flight share one stored message (and
    one round trip); every action keeps an offset of its own."""
    from wsgate.backends.nats_broker import MAX_BATCH

    a, b = await open_node("n1", size=300), await open_node("n2", size=300)
    await started(a)
    got = await started(b)
    b.broker.subscribe("chan.burst")
    await b.broker.flush()
    out0 = a.nc.stats["out_msgs"]
    n = 256
    for i in range(n):
        a.broker.publish_stream("chan.burst", "burst", b"%d" % i)
    await a.broker.flush()
    await until(lambda: len(got) == n)
    sent = a.nc.stats["out_msgs"] - out0
    assert n // MAX_BATCH <= sent < n // 4  # batches, not one message per action
    assert [int(d.data) for d in got] == list(range(n))
    offsets = [d.offset for d in got]
    assert offsets == list(range(offsets[0], offsets[0] + n))
    assert all(d.prev == d.offset - 1 for d in got)
    replay = await b.history.since("burst", offsets[0] - 1)
    assert replay == StreamReplay(True, [(d.offset, d.data) for d in got], offsets[-1])


async def test_history_keeps_size_actions_of_batched_messages(open_node) -> None:  # type: ignore[no-untyped-def]
    a = await open_node(size=3)
    got = await started(a)
    a.broker.subscribe("chan.w")
    await a.broker.flush()
    for i in range(10):  # queued at once: a batch (or a few)
        a.broker.publish_stream("chan.w", "w", b"%d" % i)
    await a.broker.flush()
    await until(lambda: len(got) == 10)
    top = got[-1].offset
    assert await a.history.window("w") == (got[-4].offset, [(d.offset, d.data) for d in got[-3:]], top)
    assert (await a.history.since("w", got[-5].offset)).recovered is False
    assert await a.history.since("w", got[-4].offset) == StreamReplay(True, [(d.offset, d.data) for d in got[-3:]], top)
    a.broker.publish_stream("chan.w", "w", b"next")  # continues after the batch's last offset
    await until(lambda: len(got) == 11)
    assert got[-1].offset == top + 1


async def test_plain_after_stream_publish_keeps_fifo(open_node) -> None:  # type: ignore[no-untyped-def]
    """A stream message goes through the stream (stored, then republished), a plain
    one straight to subscribers: the append's ack, awaited, keeps the order."""
    a, b = await open_node("n1"), await open_node("n2")
    await started(a)
    got = await started(b)
    b.broker.subscribe("chan.mix")
    await b.broker.flush()
    n = 600
    for i in range(n):
        if (i // 3) % 2:
            a.broker.publish("chan.mix", b"%d" % i)
        else:
            a.broker.publish_stream("chan.mix", "mix", b"%d" % i)
    await a.broker.flush()
    await until(lambda: len(got) == n)
    assert [int(d.data) for d in got] == list(range(n))
    assert a.broker.lost == 0


async def test_cached_heads_are_bounded(open_node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A node caches few channels' last offsets; a forgotten one is read back, so
    its offsets still continue by one."""
    from wsgate.backends import nats_broker

    monkeypatch.setattr(nats_broker, "MAX_HEADS", 2)
    a = await open_node("n1")
    got = await started(a)
    for c in "abcd":
        a.broker.subscribe(f"chan.{c}")
    await a.broker.flush()
    for _ in range(2):
        for c in "abcd":
            a.broker.publish_stream(f"chan.{c}", c, c.encode())
            await a.broker.flush()
    await until(lambda: len(got) == 8)
    assert len(a.broker._heads) == 2
    for c in "abcd":
        first, second = [d for d in got if d.subject == f"chan.{c}"]
        assert second.offset == first.offset + 1 == second.prev + 1


async def test_racing_nodes_start_one_epoch(open_node) -> None:  # type: ignore[no-untyped-def]
    """Several nodes append to a fresh channel at once: one epoch wins, the others
    lose the compare-and-set, reread and continue its counter."""
    nodes = [await open_node(f"n{i}") for i in range(3)]
    got = await started(nodes[0])
    for n in nodes[1:]:
        await started(n)
    nodes[0].broker.subscribe("chan.fresh")
    await nodes[0].broker.flush()
    for i in range(5):
        for n in nodes:
            n.broker.publish_stream("chan.fresh", "fresh", b"%d" % i)
    for n in nodes:
        await n.broker.flush()
    await until(lambda: len(got) == 15)
    offsets = sorted(d.offset for d in got)
    assert offsets == list(range(offsets[0], offsets[0] + 15))
    assert sum(n.broker.lost for n in nodes) == 0


async def test_publish_stream_only_on_its_channel_subject(open_node) -> None:  # type: ignore[no-untyped-def]
    a = await open_node()
    await started(a)
    with pytest.raises(ValueError):
        a.broker.publish_stream("hub.h", "h", b"x")


async def test_an_old_history_stream_is_updated_to_republish(server) -> None:  # type: ignore[no-untyped-def]
    import nats
    from nats.js import api

    prefix = f"old{next(_ids)}"
    names = Names(prefix)
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            api.StreamConfig(name=names.hist_stream, subjects=names.hist_subjects,
                             max_msgs_per_subject=10, max_age=30.0, allow_direct=True)
        )
        backend = await open_nats(server.url, prefix=prefix, node="n1", history_size=10,
                                  history_ttl_s=30.0)
        try:
            got = await started(backend)
            backend.broker.subscribe("chan.u")
            await backend.broker.flush()
            backend.broker.publish_stream("chan.u", "u", b"x")
            await until(lambda: len(got) == 1)
            info = await js.stream_info(names.hist_stream)
            assert info.config.republish is not None
            assert info.config.max_msgs_per_subject == 10
            assert info.config.max_msgs == 10 * 10_000
        finally:
            await backend.close()
    finally:
        await nc.close()


async def test_the_inbox_stream_takes_the_inbox_limits_and_is_updated_on_start(server) -> None:  # type: ignore[no-untyped-def]
    prefix = f"inb{next(_ids)}"
    names = Names(prefix)
    first = await open_nats(server.url, prefix=prefix, node="n1", history_size=10,
                            history_ttl_s=30.0, inbox_size=5, inbox_ttl_s=10.0,
                            inbox_max_users=7)
    try:
        js = first.nc.jetstream()
        info = await js.stream_info(names.inbox_stream)
        assert info.config.subjects == names.inbox_subjects
        assert (info.config.max_msgs_per_subject, info.config.max_msgs) == (5, 35)
        assert info.config.max_age == 10.0
        # A node started with other [inbox] limits brings the stream to them.
        second = await open_nats(server.url, prefix=prefix, node="n2", history_size=10,
                                 history_ttl_s=30.0, inbox_size=8, inbox_ttl_s=20.0,
                                 inbox_max_users=3)
        await second.close()
        info = await js.stream_info(names.inbox_stream)
        assert (info.config.max_msgs_per_subject, info.config.max_msgs) == (8, 24)
        assert info.config.max_age == 20.0
        hist = await js.stream_info(names.hist_stream)
        assert (hist.config.max_msgs_per_subject, hist.config.max_msgs) == (10, 100_000)
    finally:
        await first.close()


def test_inboxes_and_channels_are_stored_apart() -> None:
    names = Names("p")
    assert names.stored("acme:orders/1") == (names.hist_stream, names.hist("acme:orders/1"))
    assert names.stored("@inbox:ann") == (names.inbox_stream, names.inbox("@inbox:ann"))
    assert names.inbox_stream not in (names.hist_stream, names.state_stream)


# History read back from our headers -------------------------------------------


async def test_a_channel_stored_by_an_older_wsgate_continues_above(open_node) -> None:  # type: ignore[no-untyped-def]
    """A message without our headers (stored by the earlier, sequence-offset
    scheme) counts as offset = its sequence: the channel continues above it."""
    a = await open_node()
    got = await started(a)
    a.broker.subscribe("chan.up")
    await a.broker.flush()
    ack = await a.nc.jetstream().publish(a.names.hist("up"), b"old")
    a.broker.publish_stream("chan.up", "up", b"new")
    await until(lambda: len(got) == 2)
    assert got[0].offset == ack.seq and got[1].offset == ack.seq + 1


async def test_since_never_recovers_across_an_age_gap(open_node) -> None:  # type: ignore[no-untyped-def]
    """Messages age out one by one: once the older of two has, the window starts
    after it (an eviction), so 0 is no longer recovered."""
    a = await open_node(size=10, ttl=2.0)
    got = await started(a)
    a.broker.subscribe("chan.g")
    await a.broker.flush()
    a.broker.publish_stream("chan.g", "g", b"old")
    await until(lambda: len(got) == 1)
    await asyncio.sleep(1.0)  # the behaviour under test: two appends a second apart in age
    a.broker.publish_stream("chan.g", "g", b"new")
    await until(lambda: len(got) == 2)
    assert got[1].prev == got[0].offset
    assert await a.history.since("g", 0) == StreamReplay(True, [(got[0].offset, b"old"), (got[1].offset, b"new")], got[1].offset)

    async def old_aged_out() -> bool:
        return (await a.history.window("g")).base == got[0].offset

    await until(old_aged_out, timeout=3.0)  # "old" is now older than ttl, "new" is not
    assert await a.history.since("g", 0) == StreamReplay(False, [], got[1].offset)
    assert await a.history.since("g", got[0].prev) == StreamReplay(False, [], got[1].offset)
    assert await a.history.since("g", got[0].offset) == StreamReplay(True, [(got[1].offset, b"new")], got[1].offset)
    assert await a.history.window("g") == (got[0].offset, [(got[1].offset, b"new")], got[1].offset)
