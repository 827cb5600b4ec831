"""What only the Redis backend does: reconnection, dropping during outages, the queue bound."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.helpers import eventually
from tests.helpers import free_port as _free_port
from tests.servers import ServerProcess
from wsgate.backends.base import Delivery
from wsgate.backends.redis import RedisBackend, open_redis
from wsgate.exceptions import BackendUnavailable

Open = Callable[..., Awaitable[tuple[RedisBackend, list[Delivery]]]]


@pytest.fixture
async def open_node(redis_proc: ServerProcess) -> AsyncIterator[Open]:
    opened: list[RedisBackend] = []

    async def make(node: str, prefix: str = "p", **kw: float) -> tuple[RedisBackend, list[Delivery]]:
        backend = await open_redis(
            redis_proc.url, prefix=f"{prefix}{uuid.uuid4().hex[:8] if prefix == 'p' else ''}",
            node=node, history_size=int(kw.get("history_size", 8)),
            history_ttl_s=kw.get("history_ttl_s", 30.0),
        )
        # Reconnect fast in tests.
        backend.broker.max_backoff_s = 0.2
        opened.append(backend)
        got: list[Delivery] = []
        await backend.broker.start(got.append)
        return backend, got

    yield make
    for backend in opened:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(backend.close(), 5.0)


async def test_restart_resumes_delivery_and_restores_subscriptions(
    redis_proc: ServerProcess, open_node: Open
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    (a, _), (b, got) = await open_node("a", prefix), await open_node("b", prefix)
    b.broker.subscribe("chan.r")
    b.broker.subscribe("node.b")
    await b.broker.flush()
    a.broker.publish_stream("chan.r", "r", b"before")
    await a.broker.flush()
    await eventually(lambda: len(got) == 1)
    old = got[0].offset

    await asyncio.to_thread(redis_proc.restart)

    # No call to subscribe again: the broker restores both subjects itself.
    def resumed() -> bool:
        a.broker.publish("node.b", b"after")  # again until one arrives (pub/sub stores nothing)
        return any(d.data == b"after" for d in got)

    await eventually(resumed, timeout=15.0, every=0.05, what="delivery resumed")
    await asyncio.wait_for(b.broker.flush(), 5.0)
    await asyncio.wait_for(a.broker.flush(), 5.0)
    a.broker.publish_stream("chan.r", "r", b"again")
    await eventually(lambda: any(d.data == b"again" for d in got))
    again = next(d for d in got if d.data == b"again")
    # The restarted server lost the stream (no persistence); offsets still grow.
    assert again.offset > old
    assert (await b.history.since("r", old)).recovered is False


async def test_publishes_during_outage_are_dropped_not_blocked(
    redis_proc: ServerProcess, open_node: Open
) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}"
    (a, _), (b, got) = await open_node("a", prefix), await open_node("b", prefix)
    b.broker.subscribe("chan.o")
    await b.broker.flush()
    await asyncio.to_thread(redis_proc.stop)
    try:
        started = time.monotonic()
        for i in range(1000):
            a.broker.publish("chan.o", b"%d" % i)
            a.broker.publish_stream("chan.o", "o", b"%d" % i)
        assert time.monotonic() - started < 0.5  # never blocks the caller
        await eventually(lambda: a.broker.dropped >= 2000)
        assert len(a.broker._queue) == 0
        # While down, publishes are dropped at once, not queued.
        a.broker.publish("chan.o", b"late")
        assert len(a.broker._queue) == 0
        assert a.broker.dropped == 2001
    finally:
        await asyncio.to_thread(redis_proc.start)
    def resumed() -> bool:
        a.broker.publish("chan.o", b"back")  # again until one arrives (pub/sub stores nothing)
        return any(d.data == b"back" for d in got)

    await eventually(resumed, timeout=15.0, every=0.05, what="delivery resumed")
    assert all(d.data == b"back" for d in got)  # nothing from the outage arrived


async def test_queue_is_bounded_and_drops_are_counted(open_node: Open) -> None:
    prefix = f"q{uuid.uuid4().hex[:8]}"
    (a, _), (b, got) = await open_node("a", prefix), await open_node("b", prefix)
    b.broker.subscribe("chan.q")
    await b.broker.flush()
    a.broker.max_queue = 10
    for i in range(100):  # no await: the writer cannot drain meanwhile
        a.broker.publish("chan.q", b"%d" % i)
    assert len(a.broker._queue) == 10
    assert a.broker.dropped == 90
    await a.broker.flush()
    await eventually(lambda: len(got) == 10)
    assert [d.data for d in got] == [b"%d" % i for i in range(10)]


async def test_prefixes_isolate_clusters(open_node: Open) -> None:
    (a, _), (b, got_b) = await open_node("a", "x1"), await open_node("b", "x2")
    b.broker.subscribe("chan.same")
    await b.broker.flush()
    a.broker.subscribe("chan.same")
    await a.broker.flush()
    a.broker.publish_stream("chan.same", "same", b"x1 only")
    await a.broker.flush()
    # Redis ran a's publish before this one: a stray delivery would come first.
    b.broker.publish("chan.same", b"x2 sentinel")
    await eventually(lambda: len(got_b) == 1)
    assert [d.data for d in got_b] == [b"x2 sentinel"]
    assert (await b.history.since("same", 0)).top == 0


async def test_open_fails_fast_when_unreachable() -> None:
    url = f"redis://127.0.0.1:{_free_port()}"
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(
            open_redis(url, prefix="p", node="n", history_size=4, history_ttl_s=1.0), 10.0)


async def test_stream_publish_survives_a_flushed_script_cache(open_node: Open) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    (a, _), (b, got) = await open_node("a", prefix), await open_node("b", prefix)
    b.broker.subscribe("chan.s")
    await b.broker.flush()
    await a._cmd.script_flush()  # what a restart does to the script cache
    for i in range(3):
        a.broker.publish_stream("chan.s", "s", b"%d" % i)
    await a.broker.flush()
    await eventually(lambda: len(got) == 3)
    assert [d.data for d in got] == [b"0", b"1", b"2"]
    assert a.broker.dropped == 0
