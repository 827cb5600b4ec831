"""Reconnect policy: what a close code tells the client to do, and when.

The same table as ``clients/js/policy.js`` (a test runs both over every close
code and compares): whether to reconnect at all is
:func:`wsgate.protocol.codes.should_reconnect`, the one table of the protocol;
this module adds *when*.

| close code                         | decision                                 |
|------------------------------------|------------------------------------------|
| 1001 going away, 1012 restart      | reconnect at once (then back off)        |
| 4429 too many / abuse              | after ``later_ms`` (or the ERROR's       |
|                                    | ``retryAfterMs``), plus the backoff      |
| 4401, 4403, other 4400–4499, 1000, | never                                    |
| 1002, 1003, 1007, 1008, 1009       |                                          |
| anything else (1006, 1011, 1013,   | jittered exponential backoff             |
| 4000, 4408, …)                     |                                          |

Pure: the random source is a parameter, so tests are deterministic.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from wsgate.protocol.codes import CloseCode, should_reconnect

__all__ = ["DEFAULT_BACKOFF", "Backoff", "reconnect_delay", "should_reconnect"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Backoff settings, in milliseconds (the JS client's ``{minMs, maxMs, laterMs}``)."""

    min_ms: float = 500
    """First backoff step."""
    max_ms: float = 30_000
    """Cap of the exponential part."""
    later_ms: float = 15_000
    """Least delay after 4429."""


DEFAULT_BACKOFF = Backoff()

_AT_ONCE = frozenset({CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART})
"""The node goes away or restarts: another node (or the same, soon) takes us."""


def reconnect_delay(
    code: int,
    attempt: int,
    backoff: Backoff = DEFAULT_BACKOFF,
    *,
    retry_after_ms: float | None = None,
    random: Callable[[], float] = _random.random,
) -> float | None:
    """The delay in milliseconds before the next attempt, or ``None`` for "never".

    ``attempt`` counts the failed attempts since the last WELCOME (0 for the
    first reconnect). Exponential steps use "equal jitter": half the step plus
    a random part of the other half. ``retry_after_ms`` is the
    ``retryAfterMs`` of the ERROR that preceded a 4429 close.
    """
    if not should_reconnect(code):
        return None
    if code in _AT_ONCE and attempt == 0:
        return 0
    step = min(backoff.max_ms, backoff.min_ms * float(2 ** min(attempt, 30)))
    jittered: float = step / 2 + random() * step / 2
    if code == CloseCode.TOO_MANY:
        return max(backoff.later_ms, retry_after_ms or 0) + jittered
    return jittered
