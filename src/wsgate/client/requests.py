"""Requests waiting for their answer, by correlation id.

A request is sent with ``meta.id``; its answer is the first action carrying
``meta.inReplyTo`` equal to it. Each request has a future and a timeout and is
settled once: by its answer, by :data:`~wsgate.client.errors.TIMEOUT`, or by a
close (``reject_sent`` / ``reject_all``). Settling frees its entry and its
timer; so does cancelling its future (a caller's own ``wait_for``).

Bound: at most ``max_pending`` requests at once; :meth:`RequestTable.add`
raises ``PENDING_FULL`` past it. Call :meth:`add` from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from wsgate.client.errors import PENDING_FULL, TIMEOUT, ClientError

__all__ = ["Pending", "RequestTable"]


@dataclass(slots=True, eq=False)
class Pending:
    """One request waiting for its answer."""

    id: str
    future: asyncio.Future[dict[str, Any]]
    timer: asyncio.TimerHandle | None = None
    sent: bool = False
    """Written to a socket: its answer can only come on that socket."""

    @property
    def done(self) -> bool:
        """Settled (a queued frame of a settled request is dropped)."""
        return self.future.done()


class RequestTable:
    """The pending requests of one client."""

    def __init__(self, max_pending: int = 256) -> None:
        self._max = max_pending
        self._pending: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def has(self, id_: str) -> bool:
        """Whether a request with this id is waiting."""
        return id_ in self._pending

    def add(self, id_: str, type_: str, timeout_s: float) -> Pending:
        """Register a request; its future fails with ``TIMEOUT`` after ``timeout_s``.

        Raises :class:`ClientError` ``PENDING_FULL`` when ``max_pending`` are waiting,
        and ``ValueError`` for an id already waiting.
        """
        if id_ in self._pending:
            raise ValueError(f"a request {id_!r} is already waiting")
        if len(self._pending) >= self._max:
            raise ClientError(PENDING_FULL, f"{self._max} requests already wait for answers")
        loop = asyncio.get_running_loop()
        request = Pending(id_, loop.create_future())
        request.timer = loop.call_later(
            timeout_s,
            self.settle,
            id_,
            ClientError(TIMEOUT, f"no answer to {type_} in {timeout_s:g} s"),
        )
        request.future.add_done_callback(lambda _f: self._free(request))
        self._pending[id_] = request
        return request

    def settle(self, id_: str, outcome: dict[str, Any] | ClientError) -> bool:
        """Resolve with an action or fail with an error; False for an unknown id."""
        request = self._pending.get(id_)
        if request is None:
            return False
        self._free(request)
        if not request.future.done():
            if isinstance(outcome, ClientError):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
        return True

    def reject_sent(self, err: ClientError) -> None:
        """Fail the requests already written to the socket that closed; queued ones wait on."""
        for request in [r for r in self._pending.values() if r.sent]:
            self.settle(request.id, err)

    def reject_all(self, err: ClientError) -> None:
        """Fail every request."""
        for id_ in list(self._pending):
            self.settle(id_, err)

    def _free(self, request: Pending) -> None:
        if self._pending.get(request.id) is request:
            del self._pending[request.id]
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
