"""Invoking NATS services: one request/reply per action (docs/routing.md, "NATS").

Request: a NATS request on the instance's ``url``, which is a subject
(``orders.get``), with the body of every transport (:mod:`.request`:
``{"action": {...}, "context": {...}}``) and the context again in headers, so
a service can route or log without decoding the body:

==========================  ==========================================
header                      value
==========================  ==========================================
``Wsgate-Connection-Id``    ``context.connectionId``
``Wsgate-User``             ``context.userId`` (absent when anonymous)
``Wsgate-Hub``              ``context.hub``
``Wsgate-Channel``          ``context.channel`` (absent when none)
``Wsgate-Request-Id``       ``context.requestId`` (absent when none)
``traceparent``             passed through, or a fresh one
==========================  ==========================================

Several responders in one queue group share the calls (NATS hands each
request to one member); that is the services' side, the gateway sends one
request per call.

How a call travels (callback-driven, as the HTTP invoker's): every answer
comes back on one wildcard subscription of the invoker's,
``<inbox>.*``, subscribed once before the first request, a raw one
(:meth:`~wsgate.backends.nats_client.ReplyClient.subscribe_raw`: the answer's
bytes straight from nats-py's reader, no ``Msg``, no queue, no task; its
header block, present only on errors, parsed by :func:`~wsgate.routing.
nats_wire.answer_headers`); the last token of
a request's reply subject is the invoker's own correlation id (a counter),
the key of the map of calls in flight. :meth:`NatsInvoker.start` takes a
slot, encodes the body once (:func:`~wsgate.routing.request.
encode_request`), the headers once (:func:`~wsgate.routing.nats_wire.
header_block`), enters the call in the map with its deadline, and queues
the ``HPUB``; one sender task writes every queued request into nats-py's
buffer and wakes its flusher once per batch. The answer's handler pops the
call, maps the answer and tells ``done``. No task, no future, no
``wait_for`` and no timer per call, no random token per call (nats-py's
``request`` makes all of them; a timer of uvloop's, made and cancelled,
cost 2-3 µs per call; bench/README.md, "The NATS invoker: one timer, raw
answers").
Deadlines are kept by **one timer per invoker**, armed for the earliest
deadline in the map: when it fires it ends every call past its deadline
(a scan of the map, which the slots bound) and is armed again for the
earliest left, at least ``TICK_S`` later, so a call times out at most
``TICK_S`` after its ``timeout_ms`` and a service that never answers
costs at most one scan per ``TICK_S``. The map is bounded by the slots
(``max_concurrency`` per service) and freed on every way out: the answer,
the timer (``UPSTREAM_TIMEOUT``), an ``invoke`` cancelled by its caller,
a request that could not be written, and :meth:`NatsInvoker.aclose`. When
the connection is lost, a call in flight ends at its timeout (its answer
cannot come on the new connection: nats-py resubscribes, but the request
was lost with the old one); a call started while nats-py reconnects is
``UPSTREAM_UNAVAILABLE`` at once, rather than buffered and sent after its
caller has given up.

Outcomes of :meth:`NatsInvoker.invoke` (it never raises):

================================================  ====================================
answer                                            result
================================================  ====================================
a body of the reply/publish shape                 :class:`InvocationResult`
an empty body                                     empty :class:`InvocationResult`
``Nats-Service-Error-Code: 400``                  ``BAD_REQUEST``
``Nats-Service-Error-Code: 403``                  ``FORBIDDEN``
any other ``Nats-Service-Error-Code``             ``UPSTREAM_ERROR``
bad JSON, wrong shape, over the size cap          ``UPSTREAM_ERROR``
no responders on the subject                      ``UPSTREAM_UNAVAILABLE`` (instance down)
no answer within ``timeout_ms``                   ``UPSTREAM_TIMEOUT`` (instance down)
connection closed, reconnecting, invoker closed   ``UPSTREAM_UNAVAILABLE``
a request over the server's ``max_payload``       ``UPSTREAM_UNAVAILABLE``
a subject that is not one printable token         ``UPSTREAM_UNAVAILABLE``
a context value that is not printable             ``INTERNAL``
concurrency cap still full after ``timeout_ms``   ``UPSTREAM_UNAVAILABLE``
================================================  ====================================

The ``Nats-Service-Error`` text (and any body of an error answer) stays in
the gateway's log; the caller gets only the :class:`~wsgate.protocol.codes.
ErrorCode`. A service error or a malformed answer is the service's bug on
one request, not its instance's failure, so only no-responders and timeouts
take an instance out (:mod:`wsgate.routing.instances`). At most
``max_concurrency`` calls per service are in flight; a call waits up to
``timeout_ms`` for a slot, then gets its own ``timeout_ms`` for the answer.

The invoker does not own the connection: the node opens it before and
closes it after (:func:`wsgate.backends.nats.close_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final

from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from wsgate.backends.nats_client import ReplyClient
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Outbound
from wsgate.routing.context import InvocationContext
from wsgate.routing.http_invoker import InvokerStats
from wsgate.routing.instances import Instance, Service
from wsgate.routing.invoker import Done
from wsgate.routing.nats_wire import (
    STATUS,
    answer_headers,
    flush,
    header_block,
    hpub,
    refusal,
    valid_subject,
    write,
)
from wsgate.routing.outcomes import Outcomes
from wsgate.routing.request import encode_request
from wsgate.routing.results import InvocationResult, decode_result
from wsgate.routing.trace import ensure_traceparent

__all__ = ["ERROR_CODE_HEADER", "SERVICE_ERRORS", "NatsInvoker"]

log = logging.getLogger(__name__)

ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
"""The NATS service API's error code header (``nats.micro``'s ``respond_error``)."""
SERVICE_ERRORS: Final[dict[str, ErrorCode]] = {
    "400": ErrorCode.BAD_REQUEST,
    "403": ErrorCode.FORBIDDEN,
}
"""A service's error code to the client's; any other code is ``UPSTREAM_ERROR``."""
NO_RESPONDERS: Final = "503"
TICK_S: Final = 0.01
"""The invoker's timer fires at most this often (and a timeout is at most this late)."""


class _Call:
    """One request in flight: in the invoker's map from its id until it ends."""

    __slots__ = ("command", "deadline", "done", "id", "inst", "service", "timeout_s")

    def __init__(
        self,
        call_id: bytes,
        service: Service,
        inst: Instance,
        done: Done,
        command: bytes,
        timeout_s: float,
        deadline: float,
    ) -> None:
        self.id = call_id
        """The last token of the reply subject; the key in the invoker's map."""
        self.service = service
        self.inst = inst
        self.done = done
        self.command = command
        """The ``HPUB`` to write; dropped once written."""
        self.timeout_s = timeout_s
        self.deadline = deadline
        """The loop's time after which the call ends ``UPSTREAM_TIMEOUT``."""


class NatsInvoker:
    """Calls NATS services by request/reply on one connection.

    Keeps the :class:`~wsgate.routing.invoker.Invoker` contract. Lifecycle:
    the first call subscribes the reply subject (in the sender task, ahead
    of the first request); :meth:`aclose` ends the calls in flight, stops
    the tasks and unsubscribes. Tasks of the invoker's: the sender (one, while
    requests are queued) and one per call that waits for a slot of a full
    service, held in ``_tasks`` until they end.
    """

    def __init__(self, nc: ReplyClient, *, max_response_bytes: int = 1 << 20) -> None:
        self._nc = nc
        self._max_response_bytes = max_response_bytes
        """Larger answers are ``UPSTREAM_ERROR``."""
        self._prefix = nc.new_inbox() + "."
        """Reply subjects are this plus a call's id."""
        self._id_at = len(self._prefix)
        """Where a call's id starts in its reply subject."""
        self._sub: Subscription | None = None
        self._calls: dict[bytes, _Call] = {}
        """Calls in flight by id; each holds a slot of its service, so bounded by the slots."""
        self._queued: deque[_Call] = deque()
        """Calls whose request the sender has yet to write (a subset of ``_calls``)."""
        self._sender: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        """The one timer: armed for ``_timer_at`` while calls may be in the map."""
        self._timer_at = float("inf")
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        """The sender and the calls waiting for a slot; each removes itself when done."""
        self._closed = False
        self._outcomes = Outcomes(log, "subject")
        self.stats = InvokerStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop of the first call, kept: each ``get_running_loop()`` is a
        ``getpid()`` system call on CPython 3.11 (bench/README.md)."""

    def _running(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None = None,
    ) -> None:
        """Start a call; ``done`` gets what :meth:`invoke` would return, once, later.

        ``done`` is never called from within ``start``; an exception it
        raises is logged.
        """
        self.stats.calls += 1
        self._start(service, action, context, done, traceparent)

    async def invoke(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> InvocationResult | ErrorCode:
        """Call ``service`` and wait for the outcome. Never raises (but may be cancelled:
        then the call is ended and its slot freed at once)."""
        self.stats.calls += 1
        return await self._wait(service, action, context, traceparent)

    async def notify(
        self,
        service: Service,
        event_action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> None:
        """Send a lifecycle event (the same request); ignore the answer (failures counted)."""
        self.stats.calls += 1
        result = await self._wait(service, event_action, context, traceparent)
        if isinstance(result, ErrorCode):
            self.stats.notify_failures += 1

    async def aclose(self) -> None:
        """End the calls in flight (their ``done`` gets ``UPSTREAM_UNAVAILABLE``).

        Returns once every task of the invoker has finished and the reply
        subscription is gone. Later calls get ``UPSTREAM_UNAVAILABLE``. The
        connection stays open (the node's).
        """
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._queued.clear()
        for call_id in list(self._calls):
            self._end(call_id, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed")
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    def in_flight(self) -> int:
        """Calls in the map (entered, not yet ended)."""
        return len(self._calls)

    # Internals

    def _start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None,
    ) -> bytes | None:
        """Start a call; its id when it is in the map now (else it ended, or waits for a slot)."""
        loop = self._running()
        if self._closed:
            code = self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed")
            loop.call_soon(_tell, done, code)
            return None
        if not service.pool.slots.try_acquire():  # the common case costs no waiting machinery
            self._spawn(self._wait_for_slot(service, action, context, done, traceparent))
            return None
        return self._enter(loop, service, action, context, done, traceparent)

    def _enter(
        self,
        loop: asyncio.AbstractEventLoop,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None,
    ) -> bytes | None:
        """With a slot held: build the request, enter the call and queue it; its id.

        ``None`` when it ended at once (``done`` is told soon, the slot freed).
        """
        pool = service.pool
        timeout_s = pool.timeout_ms / 1000
        try:
            inst = service.pick()
            if inst is None:
                code = self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "no instance")
                pool.slots.release()
                loop.call_soon(_tell, done, code)
                return None
            body = encode_request(action, context)
            why = refusal(self._nc, len(body))
            if why is None and not valid_subject(inst.url):
                why = "not a subject"
            if why is not None:
                code = self._fail(service, inst, ErrorCode.UPSTREAM_UNAVAILABLE, why)
                pool.slots.release()
                loop.call_soon(_tell, done, code)
                return None
            header = header_block(context, ensure_traceparent(traceparent))
            self._next_id += 1
            hex_id = f"{self._next_id:x}"
            call_id = hex_id.encode()
            command = hpub(inst.url, self._prefix + hex_id, header, body)
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", service.name)
            self.stats.failures[ErrorCode.INTERNAL] += 1
            pool.slots.release()
            loop.call_soon(_tell, done, ErrorCode.INTERNAL)
            return None
        deadline = loop.time() + timeout_s
        call = _Call(call_id, service, inst, done, command, timeout_s, deadline)
        self._calls[call_id] = call
        if deadline < self._timer_at:  # the first call, or a shorter timeout than the armed
            self._arm(loop, deadline)
        self._queued.append(call)
        if self._sender is None:
            self._sender = self._spawn(self._send())
        return call_id

    async def _wait_for_slot(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None,
    ) -> None:
        pool = service.pool
        timeout_s = pool.timeout_ms / 1000
        try:
            await asyncio.wait_for(pool.slots.acquire(), timeout_s)
        except TimeoutError:
            reason = f"{pool.max_concurrency} calls in flight for {timeout_s:g}s"
            _tell(done, self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, reason))
            return
        except asyncio.CancelledError:  # aclose: done is told once
            _tell(done, ErrorCode.UPSTREAM_UNAVAILABLE)
            raise
        if self._closed:
            pool.slots.release()
            _tell(done, self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed"))
            return
        self._enter(self._running(), service, action, context, done, traceparent)

    async def _wait(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
    ) -> InvocationResult | ErrorCode:
        """:meth:`_start` and wait for ``done``; a cancelled wait ends the call."""
        fut: asyncio.Future[InvocationResult | ErrorCode] = self._running().create_future()

        def done(result: InvocationResult | ErrorCode) -> None:
            if not fut.done():
                fut.set_result(result)

        call_id = self._start(service, action, context, done, traceparent)
        try:
            return await fut
        except asyncio.CancelledError:
            if call_id is not None:  # still in the map: free its entry and slot now
                self._end(call_id, ErrorCode.UPSTREAM_UNAVAILABLE, "cancelled", log_it=False)
            raise

    async def _send(self) -> None:
        """Write every queued request as one command batch, then wake the flusher; ends
        when the queue is empty."""
        nc = self._nc
        queued = self._queued
        batch: list[_Call] = []
        """Taken from the queue, not yet in the client's buffer (bounded like the queue)."""
        try:
            if self._sub is None:
                self._sub = await nc.subscribe_raw(self._prefix + "*", self._on_answer)
            while queued:  # bounded: only calls holding a slot are queued
                commands = []
                while queued:
                    call = queued.popleft()
                    if call.command:  # else it ended while queued
                        batch.append(call)
                        commands.append(call.command)
                        call.command = b""
                if commands:  # one write for the batch: the calls' bytes, in their order
                    await write(nc, b"".join(commands))
                batch.clear()
            flush(nc)
        except NatsError as exc:  # closed or draining meanwhile: not the services' fault
            reason = f"{type(exc).__name__}: {exc}"
            for call in batch:
                self._end(call.id, ErrorCode.UPSTREAM_UNAVAILABLE, reason)
            while queued:
                self._end(queued.popleft().id, ErrorCode.UPSTREAM_UNAVAILABLE, reason)
        except Exception:  # a bug: the queued calls end INTERNAL, the next call starts afresh
            log.exception("NATS invoker: sending failed unexpectedly")
            for call in batch:
                self._end(call.id, ErrorCode.INTERNAL, "sending failed")
            while queued:
                self._end(queued.popleft().id, ErrorCode.INTERNAL, "sending failed")
        finally:
            self._sender = None
            if queued and not self._closed:  # queued after the last check, during a write
                self._sender = self._spawn(self._send())

    def _on_answer(self, subject: bytes, data: bytes, header: bytes | None) -> None:
        """The reply subscription's handler: end the call the answer belongs to."""
        call = self._calls.pop(subject[self._id_at :], None)
        if call is None:  # timed out, cancelled or closed before the answer came
            return
        try:
            result = self._outcome(call, data, header)
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", call.service.name)
            self.stats.failures[ErrorCode.INTERNAL] += 1
            result = ErrorCode.INTERNAL
        call.service.pool.slots.release()
        _tell(call.done, result)

    def _outcome(
        self, call: _Call, data: bytes, header: bytes | None
    ) -> InvocationResult | ErrorCode:
        service, inst = call.service, call.inst
        if header:
            headers = answer_headers(header)
            if headers.get(STATUS) == NO_RESPONDERS:
                return self._fail(
                    service, inst, ErrorCode.UPSTREAM_UNAVAILABLE, "no responders", down=True
                )
            code = headers.get(ERROR_CODE_HEADER)
            if code is not None:
                mapped = SERVICE_ERRORS.get(code, ErrorCode.UPSTREAM_ERROR)
                text = headers.get("Nats-Service-Error", "")[:200]
                self._outcomes.answered(service, inst)
                return self._fail(service, inst, mapped, f"service error {code}: {text}")
        if len(data) > self._max_response_bytes:
            reason = f"answer over {self._max_response_bytes} bytes"
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, reason)
        if not data:
            self._outcomes.answered(service, inst)
            return InvocationResult()
        result = decode_result(data)
        if isinstance(result, str):
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, f"bad answer: {result}")
        self._outcomes.answered(service, inst)
        return result

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._expire)

    def _expire(self) -> None:
        """The timer: end the calls past their deadline, arm again for the earliest left."""
        self._timer, self._timer_at = None, float("inf")
        loop = self._running()
        now = loop.time()
        late = [call for call in self._calls.values() if call.deadline <= now]
        for call in late:
            self._end(call.id, ErrorCode.UPSTREAM_TIMEOUT, f"no answer in {call.timeout_s:g}s")
        if self._calls and not self._closed:
            earliest = min(call.deadline for call in self._calls.values())
            self._arm(loop, max(earliest, now + TICK_S))

    def _end(self, call_id: bytes, code: ErrorCode, reason: str, *, log_it: bool = True) -> None:
        """End the call ``call_id`` without an answer: out of the map, slot freed, ``done`` told."""
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        call.command = b""  # not written if still queued
        if log_it:
            down = code is ErrorCode.UPSTREAM_TIMEOUT
            self._fail(call.service, call.inst, code, reason, down=down)
        call.service.pool.slots.release()
        _tell(call.done, code)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._running().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _fail(
        self,
        service: Service,
        inst: Instance | None,
        code: ErrorCode,
        reason: str,
        *,
        down: bool = False,
    ) -> ErrorCode:
        """Count and log (once per service and code until a success) a failed call."""
        self.stats.failures[code] += 1
        return self._outcomes.failed(service, inst, code, reason, down=down)


def _tell(done: Done, result: InvocationResult | ErrorCode) -> None:
    try:
        done(result)
    except Exception:
        log.exception("invocation callback failed")
