"""The backend boundary: driver errors become :class:`~wsgate.exceptions.BackendError`.

Each backend decorates its public awaited methods with a :func:`boundary`
built from its driver's error classes, so a caller only ever sees
:class:`~wsgate.exceptions.BackendUnavailable` (the server cannot be reached
or answered late) or :class:`~wsgate.exceptions.BackendError` (it answered
with an error), the driver's error chained as ``__cause__``. Anything else
(a bug, a cancellation) passes through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from wsgate.exceptions import BackendError, BackendUnavailable

__all__ = ["boundary"]

P = ParamSpec("P")
R = TypeVar("R")

Errors = tuple[type[BaseException], ...]


def boundary(unavailable: Errors, failed: Errors) -> Callable[
    [Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]
]:
    """A decorator raising :class:`BackendUnavailable` from ``unavailable`` errors
    and :class:`BackendError` from ``failed`` ones (checked in that order).

    The message names the decorated method (its ``__qualname__``) and the
    driver's error, so a log line says which call failed and why.
    """

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        name = getattr(fn, "__qualname__", repr(fn))

        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except BackendError:
                raise
            except unavailable as exc:
                raise BackendUnavailable(f"{name}: {_describe(exc)}") from exc
            except failed as exc:
                raise BackendError(f"{name}: {_describe(exc)}") from exc

        return call

    return wrap


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
