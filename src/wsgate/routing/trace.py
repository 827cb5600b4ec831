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

__all__ = ["ensure_traceparent", "new_traceparent", "valid_traceparent"]

_getrandbits: Final = random.getrandbits  # seeded from os.urandom, reseeded after fork
_RE: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def valid_traceparent(value: str | None) -> bool:
    """Tell whether ``value`` is a usable ``traceparent`` (W3C Trace Context §3.2)."""
    if not value or len(value) != 55:
        return False
    m = _RE.fullmatch(value)
    return (
        m is not None and m.group(1) != "ff" and m.group(2) != "0" * 32 and m.group(3) != "0" * 16
    )


def new_traceparent() -> str:
    """A fresh ``traceparent``: version 00, random ids, sampled."""
    return f"00-{_getrandbits(128) or 1:032x}-{_getrandbits(64) or 1:016x}-01"


def ensure_traceparent(value: str | None) -> str:
    """``value`` if valid, else a fresh ``traceparent``."""
    return value if value is not None and valid_traceparent(value) else new_traceparent()
