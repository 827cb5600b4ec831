"""The cluster's ledger of acknowledged deliveries fails open: a store that fails is
logged and counted, and a check is answered "unknown" so the node goes on."""

from __future__ import annotations

import asyncio

import pytest

from wsgate.backends.ack_store import AckRecord
from wsgate.backends.memory_acks import MemoryAcks
from wsgate.cluster.acks import SharedAcks
from wsgate.core.acks import AckState
from wsgate.exceptions import BackendUnavailable

from ..helpers import eventually


class DownStore(MemoryAcks):
    async def record(self, id_: str, record: AckRecord, ttl_s: float) -> None:
        raise BackendUnavailable("down")

    async def finish(self, id_: str, state: str, ttl_s: float) -> bool:
        raise BackendUnavailable("down")

    async def get(self, ids: list[str]) -> dict[str, AckRecord]:
        raise BackendUnavailable("down")


async def test_a_failing_store_is_counted_and_a_check_answered_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = SharedAcks(DownStore(), ttl_s=10.0)
    shared.start()
    try:
        answers: list[AckState | None] = []
        won: list[bool] = []
        shared.record("d1", True, "ann", 0, 1e12, False)
        shared.finish("d1", AckState.ACKED, won.append)
        shared.check("d1", answers.append)
        await eventually(lambda: shared.failures == 3, what="three failures counted")
        assert answers == [None] and won == []
        assert "acknowledgement ledger" in caplog.text
    finally:
        await shared.close()


async def test_a_full_queue_drops_and_a_dropped_check_is_answered_at_once() -> None:
    shared = SharedAcks(MemoryAcks(), ttl_s=10.0, max_queued=1)  # no writer: the queue fills
    answers: list[AckState | None] = []
    shared.record("d1", True, "ann", 0, 1e12, False)
    shared.check("d1", answers.append)
    assert shared.dropped == 1 and answers == [None]
    shared.start()
    try:
        await asyncio.wait_for(shared.drained(), 5.0)  # the queued record is written
        assert (await shared.state("d1")) is AckState.PENDING
    finally:
        await shared.close()
