"""Delivery records in process memory, shared by the nodes of one ``memory://<name>`` hub."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import msgspec

from wsgate.backends.ack_store import FINISHED, AckRecord

__all__ = ["MemoryAcks", "shared_acks"]

_SHARED: Final[dict[tuple[str, str], MemoryAcks]] = {}


class MemoryAcks:
    """:class:`~wsgate.backends.ack_store.AckStore` in a dict.

    Bounded by expiry: every call first frees the records past their freeing
    time, so it holds at most what was recorded within ``ttl_s`` plus a
    delivery's life. O(records) per call (for tests and one process)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._records: dict[str, tuple[AckRecord, float]] = {}
        """id → (record, freed at)."""

    def _sweep(self) -> None:
        now = self._now()
        for id_ in [k for k, (_, free) in self._records.items() if free <= now]:
            del self._records[id_]

    async def record(self, id_: str, record: AckRecord, ttl_s: float) -> None:
        self._sweep()
        held = self._records.get(id_)
        if held is None:
            self._records[id_] = (record, record.expires_at + ttl_s)
            return
        old, free = held
        if old.state in FINISHED:
            return
        changes: dict[str, object] = {}
        if record.offset:
            changes["offset"] = record.offset
        if record.state == "delivered":
            changes["state"] = "delivered"
        self._records[id_] = (msgspec.structs.replace(old, **changes), free)

    async def finish(self, id_: str, state: str, ttl_s: float) -> bool:
        self._sweep()
        held = self._records.get(id_)
        if held is None or held[0].state in FINISHED:
            return False
        self._records[id_] = (msgspec.structs.replace(held[0], state=state), self._now() + ttl_s)
        return True

    async def get(self, ids: list[str]) -> dict[str, AckRecord]:
        self._sweep()
        return {id_: held[0] for id_ in ids if (held := self._records.get(id_)) is not None}

    def __len__(self) -> int:
        return len(self._records)

    async def close(self) -> None:
        pass


def shared_acks(url: str, prefix: str) -> MemoryAcks:
    """The store every node of the in-process hub ``(url, prefix)`` shares (tests).

    One per hub for the process's life, as the hubs of
    :mod:`wsgate.backends.memory_cluster` are."""
    return _SHARED.setdefault((url, prefix), MemoryAcks())
