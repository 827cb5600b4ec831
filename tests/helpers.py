"""Helpers shared by every test package: a free port, bounded polling, and loop look-ups.

Tests never sleep to synchronize: they poll the condition they wait for with
:func:`eventually` (in a coroutine) or :func:`wait_until` (in plain code), each
bounded in time and in the number of checks, and failing with what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

__all__ = [
    "DEADLINE_S", "eventually", "free_port", "loop_lookups", "settled", "wait_until",
]  # fmt: skip

DEADLINE_S = 5.0
"""How long a condition may take by default."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server that must be told its port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _checks(timeout: float, every: float) -> int:
    return int(timeout / every) + 2


async def eventually(
    check: Callable[[], object | Awaitable[object]],
    timeout: float = DEADLINE_S,
    *,
    every: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll ``check`` (a function, or one returning an awaitable) until it is truthy.

    Raises :class:`AssertionError` naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    for _ in range(_checks(timeout, every)):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout} s")


def wait_until(
    check: Callable[[], object],
    timeout: float = DEADLINE_S,
    *,
    every: float = 0.05,
    what: str = "condition",
) -> None:
    """:func:`eventually` for code outside an event loop (starting a process)."""
    deadline = time.monotonic() + timeout
    for _ in range(_checks(timeout, every)):
        if check():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout} s")


async def settled(check: Callable[[], bool], timeout: float = 3.0, *, every: float = 0.01) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes (bounded in count too);
    return its last value, for ``assert await settled(...)`` with a message of its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(_checks(timeout, every)):
        if check() or loop.time() > deadline:
            break
        await asyncio.sleep(every)
    return check()


@contextmanager
def loop_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count wsgate's calls of ``asyncio.get_running_loop`` inside the block (``[n]``;
    a caller outside ``wsgate``, such as a grpcio server in the test, is not counted).

    On CPython 3.11 each one is a ``getpid()`` system call (the running-loop
    check against a fork), so a path run per message must keep its loop
    instead (bench/README.md, "One getpid() per call"). The real function still runs.
    """
    real = asyncio.get_running_loop
    count = [0]

    def counted() -> asyncio.AbstractEventLoop:
        if str(sys._getframe(1).f_globals.get("__name__", "")).startswith("wsgate"):
            count[0] += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    try:
        yield count
    finally:
        monkeypatch.setattr(asyncio, "get_running_loop", real)
