"""Revocations in process memory: one node, or the nodes of one ``memory://<name>`` hub."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["MemoryRevocations", "shared_revocations"]

_SHARED: Final[dict[tuple[str, str], MemoryRevocations]] = {}


class MemoryRevocations:
    """:class:`~wsgate.backends.base.RevocationStore` in a dict.

    Bounded by expiry: every :meth:`put` and :meth:`all` drops the entries
    past their ``ttl_s``, so it holds at most what was revoked within the
    longest ``ttl_s``.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._entries: dict[str, tuple[float, float]] = {}
        """key -> (not before, expires at)."""

    def _sweep(self) -> None:
        now = self._now()
        for key in [k for k, (_, until) in self._entries.items() if until <= now]:
            del self._entries[key]

    async def put(self, key: str, not_before: float, ttl_s: float) -> None:
        self._sweep()
        until = self._now() + ttl_s
        held = self._entries.get(key)
        if held is not None:
            not_before, until = max(not_before, held[0]), max(until, held[1])
        self._entries[key] = (not_before, until)

    async def all(self) -> dict[str, float]:
        self._sweep()
        return {key: nb for key, (nb, _) in self._entries.items()}

    async def close(self) -> None:
        pass


def shared_revocations(url: str, prefix: str) -> MemoryRevocations:
    """The store every node of the in-process hub ``(url, prefix)`` shares (tests).

    One per hub for the process's life, as the hubs of
    :mod:`wsgate.backends.memory_cluster` are.
    """
    return _SHARED.setdefault((url, prefix), MemoryRevocations())
