"""wsgate.sdk.eager: which coroutine handlers can never suspend, and running them without a task."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from wsgate.sdk.eager import eager, never_suspends


async def no_await(x: int) -> int:
    return x + 1


async def awaits(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def async_with(lock: asyncio.Lock) -> int:
    async with lock:
        return 1


async def async_for(items: Any) -> list[Any]:
    return [i async for i in items]


async def nested_awaits_unawaited(x: int) -> int:
    async def inner() -> None:
        await asyncio.sleep(0)

    del inner  # defined, never awaited: the outer frame has no yield
    return x


async def raises(x: int) -> int:
    raise ValueError(x)


def plain(x: int) -> int:
    return x


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (no_await, True),
        (nested_awaits_unawaited, True),
        (raises, True),
        (awaits, False),
        (async_with, False),
        (async_for, False),
        (plain, False),
        (functools.partial(no_await, 1), False),
        (lambda x: x, False),
    ],
)
def test_never_suspends_reads_the_bytecode(fn: Any, expected: bool) -> None:
    assert never_suspends(fn) is expected


def test_eager_runs_it_to_the_end_at_once_and_leaves_the_others_alone() -> None:
    run = eager(no_await)
    assert run is not no_await and run(1) == 2  # no loop running: a plain call
    with pytest.raises(ValueError):
        eager(raises)(3)
    assert eager(awaits) is awaits and eager(plain) is plain
