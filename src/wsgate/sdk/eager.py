"""Coroutine handlers that can never suspend, run to the end at once (no task).

An ``async def`` whose body has no suspension point — no ``await``, ``async
for`` or ``async with`` anywhere in its own code — finishes on the first
``send(None)`` of its coroutine: it cannot yield to the loop, because a
coroutine frame yields only through a ``YIELD_VALUE`` instruction of its own
(an ``await`` compiles to one; nested functions and comprehensions are code
objects of their own and are only awaited through one). :func:`eager` reads
that off the bytecode once, at registration, and turns such a handler into a
plain call, so the built-in server answers it from the parser callback
without a task (bench/README.md, "The SDK's service path without a task").

What differs from running it in a task: ``asyncio.current_task()`` is
``None`` inside it. Every other handler is returned unchanged.
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["eager", "never_suspends"]



def never_suspends(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` function whose own code never yields."""
    if not inspect.iscoroutinefunction(fn) or not hasattr(fn, "__code__"):
        return False  # (a partial, a callable object, a plain def: not this)
    return not any(i.opname == "YIELD_VALUE" for i in dis.get_instructions(fn.__code__))


def eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a plain function when it :func:`never_suspends`; else ``fn`` itself."""
    if not never_suspends(fn):
        return fn
    coroutine_fn: Callable[..., Coroutine[Any, Any, Any]] = fn

    def run(*args: Any) -> Any:
        coro = coroutine_fn(*args)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()  # unreachable: it has no instruction that yields
        raise RuntimeError(f"{fn!r} suspended")

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run
