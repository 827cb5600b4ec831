"""W3C Trace Context: the ``traceparent`` header passed to services.

A valid incoming ``traceparent`` (a client's ``meta.traceparent``) is passed
through unchanged when tracing is off; with ``[tracing]`` on, the service gets
the gateway span's own (:mod:`wsgate.tracing`). A missing or malformed one is
replaced by a fresh one (random trace and parent ids, sampled flag set), so every
invocation carries one. Trace ids identify, they protect nothing: they come
from a Mersenne Twister seeded from the OS (no system call per id).
"""

from __future__ import annotations

import random
import re
from typing import Final

__all__ = ["ensure_traceparent", "new_traceparent", "traceparent_bytes", "valid_traceparent"]

_getrandbits: Final = random.getrandbits  # seeded from os.urandom, reseeded after fork
_ZERO_TRACE: Final = "0" * 32
_ZERO_PARENT: Final = "0" * 16
_LOW64: Final = (1 << 64) - 1
_TRACE_ONE: Final = 1 << 64
"""The least 192-bit draw whose trace id (its top 128 bits) is not zero."""
_RE: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def valid_traceparent(value: str | None) -> bool:
    """Tell whether ``value`` is a usable ``traceparent`` (W3C Trace Context §3.2)."""
    if not value or len(value) != 55:
        return False
    m = _RE.fullmatch(value)
    return (
        m is not None
        and m.group(1) != "ff"
        and m.group(2) != _ZERO_TRACE
        and m.group(3) != _ZERO_PARENT
    )


def new_traceparent() -> str:
    """A fresh ``traceparent``: version 00, random ids, sampled (made once per routed
    call without a valid one).

    The trace id (128 bits) and the parent id (64) come from one draw, an all-zero id
    (§3.2.2.3, never valid) drawing again; they are written by ``bytes.hex`` with its
    separator after the 16th byte (about 4,000 instructions less than two ``:032x``
    formattings)."""
    ids = _getrandbits(192)
    while ids < _TRACE_ONE or not ids & _LOW64:
        ids = _getrandbits(192)
    return f"00-{ids.to_bytes(24).hex('-', -16)}-01"


def ensure_traceparent(value: str | None) -> str:
    """``value`` if valid, else a fresh ``traceparent``."""
    return value if value is not None and valid_traceparent(value) else new_traceparent()


def traceparent_bytes(value: str | None) -> bytes:
    """``ensure_traceparent(value)`` as ASCII bytes, for a header block."""
    return ensure_traceparent(value).encode()
