"""One keep-alive HTTP/1.1 client connection: requests out, answers matched in order.

A :class:`Conn` carries any number of requests at once (HTTP/1.1
pipelining; how many is the caller's choice, see :mod:`.http1`). A request
is queued with :meth:`Conn.queue`; the queued requests of one event-loop
iteration are written together, with one ``transport.write``, when the
client flushes (at the end of the iteration). Answers come back in request
order and are matched first in, first out.

The answers are read by :class:`~wsgate.routing.http1_parse.AnswerParser`
(a pure parser, no I/O), which :class:`Conn` extends with the socket and the
calls. A body over ``max_response_bytes`` is not read: its call gets the
status with ``None`` for the body and the connection is dropped.

Failures reach the calls as :class:`~wsgate.exceptions.HttpError` subclasses:

- :class:`ResponseTimeout`: a call on the connection passed its deadline.
  The connection is dropped and every call on it gets this error: the calls
  behind a stuck one would wait for it. One timer per connection, re-armed
  only when it fires (deadlines of one service grow in queue order);
- :class:`Unanswered`: the connection closed with no byte of an answer since
  the requests were written (the keep-alive race: the server closed an idle
  connection as they crossed), or after an answer that announced
  ``Connection: close`` — the server processed none of them, so the caller
  may send them again;
- :class:`Dropped`: it closed mid-answer, or after answering some of the
  calls (the others may have been processed: they are not sent again);
- :class:`ProtocolError`: the answer is not valid HTTP/1.1 as this parser
  reads it (every call on the connection fails with it);
- :class:`ConnectFailed` is raised by the pool (no connection was made).

A call is a :class:`Pending` the caller made (its subclass says what to do
with the answer, so a call costs one object). A call whose caller gave up is
still answered: its answer is read, so the connection stays usable, and the
caller's :meth:`Pending.answer` discards it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol, cast

from wsgate.exceptions import (
    ConnectFailed,
    Dropped,
    HttpError,
    ProtocolError,
    ResponseTimeout,
    Unanswered,
)
from wsgate.routing.http1_parse import DEAD, EOF, HEAD, IDLE, MAX_HEAD, AnswerParser

__all__ = [
    "MAX_HEAD",
    "Conn",
    "ConnOwner",
    "ConnectFailed",
    "Dropped",
    "HttpError",
    "Pending",
    "ProtocolError",
    "ResponseTimeout",
    "Unanswered",
]

log = logging.getLogger(__name__)


class Pending:
    """A call written (or about to be) on a connection, waiting for its answer.

    The caller's subclass has a ``deadline`` (``loop.time()``), set before queueing,
    and implements :meth:`answer`: the call is its own callback, no bound method or
    second object per call. (No slots here, so that a subclass may be a
    ``msgspec.Struct``.)
    """

    __slots__ = ()

    deadline: float

    def answer(self, status: int, body: bytes | None, exc: HttpError | None) -> None:
        """Told the outcome once, never from within :meth:`Conn.queue`:
        ``(status, body, None)`` or ``(0, None, error)``."""
        raise NotImplementedError


def _tell(call: Pending, status: int, body: bytes | None, exc: HttpError | None) -> None:
    try:
        call.answer(status, body, exc)
    except Exception:
        log.exception("HTTP call callback failed")


class Flusher(Protocol):
    """Writes the dirty connections' queued requests at the end of the iteration."""

    def dirty(self, conn: Conn) -> None: ...


class ConnOwner(Protocol):
    """What a :class:`Conn` needs of its pool (:class:`wsgate.routing.http1.Pool`).

    Typed here so that this module needs no import of :mod:`.http1` (which imports it).
    """

    filling: Conn | None
    """The connection taking requests in this loop iteration (cleared at the flush)."""

    @property
    def conns(self) -> set[Conn]:
        """The open connections: a connection adds itself when made, leaves when lost."""

    @property
    def client(self) -> Flusher: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def max_body(self) -> int: ...

    def release(self, conn: Conn) -> None:
        """``conn`` answered its last call: it is idle and may be reused."""

    def forget(self, conn: Conn) -> None:
        """``conn`` is closing: it takes no more calls."""


class Conn(AnswerParser, asyncio.Protocol):
    """One keep-alive connection to a service instance (see the module docstring)."""

    __slots__ = (
        "calls",
        "got",
        "idle_since",
        "out",
        "pool",
        "reserved",
        "timer",
        "timer_at",
        "transport",
    )

    def __init__(self, pool: ConnOwner, *, reserved: int = 0) -> None:
        super().__init__(pool.max_body)
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reserved = reserved
        """Places held for a caller that opened the connection and has not queued yet."""
        self.calls: deque[Pending] = deque()
        """Calls written or queued, oldest (the one being answered) first."""
        self.out: list[bytes] = []
        """Requests queued in this loop iteration, not written yet."""
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.got = False
        """A byte of an answer arrived since the connection was last idle."""
        self.idle_since = 0.0

    def usable(self) -> bool:
        transport = self.transport
        return self.state != DEAD and transport is not None and not transport.is_closing()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.pool.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.conns.discard(self)
        if self.state == DEAD:
            return
        if self.state == EOF and self.calls:
            self._finish(b"".join(self.chunks))  # the body ends with the connection
            return  # (it announced the close: the calls behind are Unanswered)
        if not self.calls:
            self._drop(Dropped, "", abort=False)  # leaves the pool's lists
        elif not self.got:
            self._drop(Unanswered, f"closed before answering: {exc}", abort=False)
        else:
            self._drop(Dropped, f"closed mid-answer: {exc}", abort=False)

    def data_received(self, data: bytes) -> None:
        if self.calls:
            self.got = True
        try:
            self.feed(data)  # IDLE exactly when no call waits: then a byte is an error
        except ProtocolError as exc:
            self._drop(ProtocolError, str(exc), abort=True)

    # Calls

    def queue(self, request: bytes, call: Pending) -> None:
        """Queue ``request``; it is written when the client flushes.

        ``call.answer`` gets the answer, never from within this call.
        """
        self.calls.append(call)
        if self.state == IDLE:
            self.state = HEAD
        out = self.out
        out.append(request)
        if len(out) == 1:
            self.pool.client.dirty(self)
        deadline = call.deadline
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)

    def flush(self) -> None:
        """Write the queued requests (the client's end-of-iteration flush)."""
        out = self.out
        if not out:
            return
        self.out = []
        transport = self.transport
        if self.state != DEAD and transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def drop(self, exc: type[HttpError], reason: str, *, abort: bool = True) -> None:
        """Close (or abort) the connection; every call on it gets ``exc(reason)``."""
        self._drop(exc, reason, abort=abort)

    def _arm(self, deadline: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = self.pool.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.calls or self.state == DEAD:
            return
        first = min(call.deadline for call in self.calls)
        if first <= self.pool.loop.time():
            self._drop(ResponseTimeout, "no answer in time", abort=True)
        else:
            self._arm(first)

    def _drop(self, exc: type[HttpError], reason: str, *, abort: bool) -> None:
        if self.state == DEAD:
            return
        self.state = DEAD
        self.pool.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        calls = self.calls
        self.calls = deque()
        self.out = []
        self.chunks = []
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        for call in calls:
            _tell(call, 0, None, exc(reason))

    def _finish(self, body: bytes | None) -> None:
        """The oldest call's answer is complete (``None``: too large, unread)."""
        call = self.calls.popleft()
        if self.chunks:  # a body read in parts (a whole one never made a list)
            self.chunks = []
        if body is None:
            self._drop(Dropped, "an answer ahead of it was too large", abort=True)
        elif self.close_after:
            self._drop(Unanswered, "the server announced it closes", abort=False)
        elif not self.calls:
            self.state = IDLE
            self.got = False
            self.pool.release(self)
        else:
            self.state = HEAD
        try:  # what _tell does, inline: one frame less per answer
            call.answer(self.status, body, None)
        except Exception:
            log.exception("HTTP call callback failed")
