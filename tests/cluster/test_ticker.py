"""The cluster bus's one periodic loop: periods by tick count, fail open, awaited close.

Real asyncio with a fast period (10 ms): the tests poll the ticker's own tick
count with ``eventually`` and read the counts after :meth:`Ticker.close`, when
no callback can run any more, so every count is exact.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from wsgate.cluster.ports import TickJob
from wsgate.cluster.ticker import Ticker

from ..helpers import eventually
from .cluster import cluster

FAST_S = 0.01


def _ticker_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == Ticker.TASK_NAME and not t.done()]


async def test_each_callback_runs_every_nth_tick_in_registration_order() -> None:
    ticker = Ticker(FAST_S)
    runs: list[tuple[int, str]] = []

    def job(name: str) -> TickJob:
        async def run() -> None:
            runs.append((ticker.ticks, name))

        return run

    ticker.every(1, "one", job("one"))
    ticker.every(2, "two", job("two"))
    ticker.every(3, "three", job("three"))
    ticker.start()
    try:
        await eventually(lambda: ticker.ticks >= 12, what="12 ticks")
    finally:
        await ticker.close()
    ticks = ticker.ticks
    assert ticks >= 12
    for n, name in [(1, "one"), (2, "two"), (3, "three")]:
        assert [t for t, who in runs if who == name] == list(range(n, ticks + 1, n))
    assert [who for t, who in runs if t == 6] == ["one", "two", "three"]
    assert ticker.schedule() == [("one", 1), ("two", 2), ("three", 3)]


async def test_a_raising_callback_is_logged_counted_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wsgate.cluster.ticker")
    ticker = Ticker(FAST_S)
    after = 0

    async def boom() -> None:
        raise ConnectionError("backend away")

    async def later() -> None:
        nonlocal after
        after += 1

    ticker.every(1, "boom", boom)
    ticker.every(1, "later", later)
    ticker.start()
    try:
        await eventually(lambda: ticker.ticks >= 5, what="5 ticks")
    finally:
        await ticker.close()
    assert ticker.failures == {"boom": ticker.ticks, "later": 0}
    assert after == ticker.ticks
    failed = [r for r in caplog.records if r.name == "wsgate.cluster.ticker"]
    assert len(failed) == ticker.ticks
    assert all(r.exc_info is not None and "boom" in r.getMessage() for r in failed)


async def test_close_awaits_a_callback_mid_await_and_leaves_no_task() -> None:
    ticker = Ticker(FAST_S)
    entered = asyncio.Event()
    ended = False

    async def stuck() -> None:
        nonlocal ended
        entered.set()
        try:
            await asyncio.Event().wait()  # a request that never answers
        finally:
            ended = True

    ticker.every(1, "stuck", stuck)
    ticker.start()
    await asyncio.wait_for(entered.wait(), 5.0)
    assert len(_ticker_tasks()) == 1
    await ticker.close()
    assert ended  # close() returned only after the callback's own cleanup ran
    assert _ticker_tasks() == []
    await ticker.close()  # a second close is a no-op


async def test_registration_is_closed_once_started_and_names_are_unique() -> None:
    ticker = Ticker(FAST_S)

    async def nothing() -> None:
        return None

    ticker.every(1, "a", nothing)
    with pytest.raises(ValueError):
        ticker.every(1, "a", nothing)
    with pytest.raises(ValueError):
        ticker.every(0, "b", nothing)
    ticker.start()
    try:
        with pytest.raises(RuntimeError):
            ticker.every(1, "c", nothing)
    finally:
        await ticker.close()
    assert _ticker_tasks() == []


async def test_the_bus_owns_one_ticker_with_each_parts_period_and_close_stops_it() -> None:
    """The periods the heartbeat loop had: beat every tick (ttl/3), sweep every 2nd,
    re-list every 3rd, routes reload every 15th, taps renewed every tick; the node's stop
    ends the one loop."""
    async with cluster(f"memory://{uuid.uuid4().hex[:8]}", size=1) as (a,):
        bus = a.node.bus
        assert bus is not None
        assert bus.ticker.period_s == pytest.approx(1.0 / 3)  # presence_ttl_s = 1.0
        assert bus.ticker.schedule() == [
            ("presence.beat", 1),
            ("presence.sweep", 2),
            ("query.relist", 3),
            ("routes.reload", 15),
            ("taps.renew", 1),
        ]
        await eventually(lambda: bus.ticker.ticks >= 1, what="a tick")
        assert len(_ticker_tasks()) == 1
        assert bus.ticker.failures == dict.fromkeys(
            ["presence.beat", "presence.sweep", "query.relist", "routes.reload", "taps.renew"], 0
        )
    assert _ticker_tasks() == []
