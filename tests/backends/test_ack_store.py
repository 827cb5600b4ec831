"""The acknowledgement store's contract (:class:`~wsgate.backends.ack_store.AckStore`),
over the memory hub, a real Redis and a real NATS (KeyValue), each test under its own
prefix; two stores of one prefix stand for two nodes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.helpers import eventually
from wsgate.backends.ack_store import AckRecord, AckStore
from wsgate.backends.acks import open_acks

Open = Callable[[float], Awaitable[AckStore]]


@pytest.fixture(params=["memory", "redis", "nats"])
async def ack_stores(request: pytest.FixtureRequest) -> AsyncIterator[Open]:
    """Opens stores of one prefix (as several nodes would); closes them after the test."""
    kind: str = request.param
    url = "memory://acks" if kind == "memory" else request.getfixturevalue(f"{kind}_proc").url
    prefix = f"t{uuid.uuid4().hex[:12]}"
    opened: list[AckStore] = []

    async def make(ttl_s: float) -> AckStore:
        store = await asyncio.wait_for(open_acks(url, prefix=prefix, ttl_s=ttl_s), 10.0)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def _rec(state: str, offset: int = 0, life_s: float = 30.0, target: str = "ann") -> AckRecord:
    return AckRecord(target, True, offset, state, time.time() + life_s)


async def test_a_record_is_shared_and_only_moves_forward(ack_stores: Open) -> None:
    a, b = await ack_stores(30.0), await ack_stores(30.0)
    assert await b.get(["d1", "nope"]) == {}
    first = _rec("pending")
    await a.record("d1", first, 30.0)
    assert await b.get(["d1"]) == {"d1": first}
    await b.record("d1", _rec("delivered", offset=42), 30.0)  # another node framed it
    got = (await a.get(["d1"]))["d1"]
    assert (got.state, got.offset, got.expires_at) == ("delivered", 42, first.expires_at)
    await a.record("d1", _rec("pending"), 30.0)  # never back to pending, offset kept
    got = (await b.get(["d1"]))["d1"]
    assert (got.state, got.offset) == ("delivered", 42)


async def test_a_finish_is_won_by_one_node_and_never_undone(ack_stores: Open) -> None:
    a, b = await ack_stores(30.0), await ack_stores(30.0)
    await a.record("d2", _rec("delivered", offset=7), 30.0)
    won = await asyncio.gather(a.finish("d2", "acked", 30.0), b.finish("d2", "acked", 30.0))
    assert sorted(won) == [False, True]
    assert not await a.finish("d2", "expired", 30.0)
    await b.record("d2", _rec("delivered", offset=8), 30.0)
    got = (await a.get(["d2"]))["d2"]
    assert (got.state, got.offset) == ("acked", 7)
    assert not await a.finish("unknown", "acked", 30.0)


async def test_records_are_freed_after_their_life_and_ttl(ack_stores: Open) -> None:
    a = await ack_stores(0.5)
    await a.record("d3", _rec("pending", life_s=0.5), 0.5)
    await a.record("d4", _rec("pending"), 0.5)
    assert await a.finish("d4", "acked", 0.5)
    assert set(await a.get(["d3", "d4"])) == {"d3", "d4"}

    async def freed() -> bool:
        return await a.get(["d3", "d4"]) == {}

    await eventually(freed, timeout=6.0, every=0.1, what="the records freed")
