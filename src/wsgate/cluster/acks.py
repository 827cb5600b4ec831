"""Acknowledged delivery in a cluster: the core's :class:`~wsgate.core.acks.Ledger`
over the backend's :class:`~wsgate.backends.ack_store.AckStore`.

:class:`SharedAcks` turns the core's calls (which return at once) into the
store's awaited ones: one writer task takes them from a bounded queue, in
order, and hands each answer back to the core's callback on the event loop.
A call the backend fails is logged and counted (:attr:`SharedAcks.failures`)
and answered "unknown": the node goes on from its own table (fail open). A
call that finds the queue full is dropped and counted
(:attr:`SharedAcks.dropped`); a dropped check is answered "unknown" at once.

:meth:`SharedAcks.restore` is what the inbox preload
(:mod:`wsgate.cluster.inbox`) asks before a user's first tab on this node is
admitted: the user's stream holds each acknowledged action with its delivery
id (:attr:`Envelope.ack <wsgate.cluster.envelope.Envelope.ack>`); one read of
the store says which are unfinished, and the node's table holds those, so the
gateway sends them to the tab on connect, with their offsets.

:meth:`SharedAcks.state` answers ``GET /v1/deliveries/{id}`` on any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from wsgate.backends.ack_store import AckRecord, AckStore
from wsgate.cluster import envelope as env
from wsgate.cluster.inbox import client_frame
from wsgate.core.acks import Acks, AckState
from wsgate.exceptions import BackendError

__all__ = ["MAX_QUEUED", "SharedAcks"]

log = logging.getLogger("wsgate.cluster.acks")

MAX_QUEUED: Final = 10_000
"""Ledger calls waiting for the writer task at most (past it: dropped, counted)."""

_Op = Callable[[], Awaitable[None]]


class SharedAcks:
    """The cluster's ledger of deliveries for one node (see the module docstring).

    Order of calls: build it with the store, give it to the gateway (its
    ``ledger``) and the bus; :meth:`start` on the running loop; :meth:`close`
    after the gateway stopped (it closes the store).
    """

    def __init__(self, store: AckStore, *, ttl_s: float, max_queued: int = MAX_QUEUED) -> None:
        self.store = store
        self._ttl = ttl_s
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(max_queued)
        self._writer: asyncio.Task[None] | None = None
        self.failures = 0
        """Store calls that failed (each logged) and were answered "unknown"."""
        self.dropped = 0
        """Calls dropped because :data:`MAX_QUEUED` were waiting."""

    async def drained(self) -> None:
        """Wait until every call queued so far was made (tests, a clean stop)."""
        await self._queue.join()

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write())

    async def close(self) -> None:
        """Stop the writer (what is queued is dropped) and close the store; never raises."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        try:
            await self.store.close()
        except Exception:
            log.warning("the acknowledgement store did not close", exc_info=True)

    # The core's Ledger -----------------------------------------------------------

    def record(
        self, id_: str, user: bool, target: str, offset: int, expires_at: float, sent: bool
    ) -> None:
        rec = AckRecord(target, user, offset, "delivered" if sent else "pending", expires_at)

        async def op() -> None:
            await self.store.record(id_, rec, self._ttl)

        self._put(op)

    def finish(self, id_: str, state: AckState, done: Callable[[bool], None]) -> None:
        async def op() -> None:
            done(await self.store.finish(id_, state.value, self._ttl))

        self._put(op)

    def check(self, id_: str, done: Callable[[AckState | None], None]) -> None:
        async def op() -> None:
            try:
                found = await self.store.get([id_])
            except Exception:
                done(None)  # answered whatever failed, so the entry's timer is set again
                raise
            rec = found.get(id_)
            done(None if rec is None else _state(rec))

        if not self._put(op):
            done(None)

    # The API and the inbox preload -------------------------------------------------

    async def state(self, id_: str) -> AckState | None:
        """Delivery ``id_``'s state in the cluster (``None``: unknown or freed). An
        unfinished record past its expiry is ``EXPIRED`` (its publishing node may be
        gone). Raises what the store raises."""
        rec = (await self.store.get([id_])).get(id_)
        return None if rec is None else _state(rec)

    async def restore(self, acks: Acks, user: str, entries: list[tuple[int, bytes]]) -> None:
        """Give ``acks`` the ledger's word on each acknowledged action of ``user``'s
        stream window ``entries`` (``(offset, envelope)``). Raises what the store raises."""
        found: dict[str, tuple[int, bytes]] = {}
        for offset, data in entries:
            envelope = env.decode(data)
            if envelope is not None and envelope.ack:
                found[envelope.ack] = (offset, data)
        if not found:
            return
        records = await self.store.get(list(found))
        for id_, rec in records.items():
            offset, data = found[id_]
            acks.restore(id_, user, offset, client_frame(data, offset), _state(rec),
                         rec.expires_at)

    # Internals ----------------------------------------------------------------------

    def _put(self, op: _Op) -> bool:
        try:
            self._queue.put_nowait(op)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("acknowledgement ledger: %d calls waiting; one dropped",
                        self._queue.qsize())
            return False
        return True

    async def _write(self) -> None:
        while True:
            op = await self._queue.get()
            try:
                await op()
            except BackendError:
                self.failures += 1
                log.warning("acknowledgement ledger: a store call failed", exc_info=True)
            except Exception:
                self.failures += 1
                log.exception("acknowledgement ledger: a store call raised")
            finally:
                self._queue.task_done()


def _state(rec: AckRecord) -> AckState:
    state = AckState(rec.state)
    if state in (AckState.PENDING, AckState.DELIVERED) and time.time() >= rec.expires_at:
        return AckState.EXPIRED
    return state
