"""Invoking HTTP services: one signed POST per action (design §4).

Request: ``POST <instance url>`` with body ``{"action": {...}, "context":
{...}}`` and headers ``Content-Type: application/json``,
``X-Wsgate-Connection-Id``, ``X-Wsgate-Request-Id`` (when the context has
one), ``traceparent`` (passed through or generated) and
``X-Wsgate-Signature`` (when the service has a secret). The action's payload
is raw JSON, embedded without re-encoding.

Outcomes of :meth:`HttpInvoker.invoke` (it never raises):

=============================================  ====================================
answer                                         result
=============================================  ====================================
``200`` with a valid body                      :class:`InvocationResult`
``202`` / ``204``                              empty :class:`InvocationResult`
no answer within ``timeout_ms``                ``UPSTREAM_TIMEOUT`` (instance down)
``502``/``503``/``504`` (any 5xx but 500/501)  ``UPSTREAM_ERROR`` (instance down)
connection dropped mid-answer                  ``UPSTREAM_ERROR`` (instance down)
``500``/``501`` (the handler failed)           ``UPSTREAM_ERROR``
bad JSON, wrong shape, too large, other code   ``UPSTREAM_ERROR``
refused, DNS failure, bad URL                  next instance (this one down)
no healthy (reachable) instance left           ``UPSTREAM_UNAVAILABLE``
concurrency cap still full after timeout_ms    ``UPSTREAM_UNAVAILABLE``
=============================================  ====================================

A refused connection never delivered the request, so the call moves on to
the next healthy instance, trying each instance at most once. A pooled
connection the service closed while it was idle is retried once on a fresh
one (only when no byte of an answer came back; see :mod:`.http1`, the lean
HTTP/1.1 client underneath, TLS included). ``timeout_ms`` bounds the whole
call once it has a slot: connecting, failing over and the answer.
"Instance down" means the instance is taken out for its back-off
(:mod:`wsgate.routing.instances`); a malformed answer or a ``500`` is the
service's bug on one request, not its instance's failure, so it does not
(else one poisonous action could take every instance out). At most ``max_concurrency`` calls per
service are in flight; a call that finds the cap full waits up to
``timeout_ms`` for a slot, then gets its own ``timeout_ms`` for the answer
(so a caller waits at most twice ``timeout_ms``).

Logging: an instance going down or coming back is logged once; other
failures are logged once per service and error code until the service next
succeeds; successes are never logged. Details stay in the log: the caller
gets only an :class:`~wsgate.protocol.codes.ErrorCode`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, overload

import msgspec

from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Outbound
from wsgate.routing.context import InvocationContext
from wsgate.routing.http1 import (
    ConnectFailed,
    Http1Client,
    HttpError,
    Pending,
    ResponseTimeout,
    Unanswered,
)
from wsgate.routing.instances import Instance, Service
from wsgate.routing.outcomes import Outcomes
from wsgate.routing.request import encode_request
from wsgate.routing.results import InvocationResult, decode_result
from wsgate.routing.signature import HEADER, sign
from wsgate.routing.trace import ensure_traceparent

__all__ = ["HttpInvoker", "InvokerStats"]

log = logging.getLogger(__name__)


@dataclass
class InvokerStats:
    """Counters for metrics; they only grow."""

    calls: int = 0
    """Invocations and notifications started."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed calls by error code."""
    notify_failures: int = 0
    """Lifecycle notifications that failed (also counted in ``failures``)."""


class HttpInvoker:
    """Calls HTTP services over pooled keep-alive connections (:mod:`.http1`).

    The client is created on first use and closed by :meth:`aclose`; calls
    after :meth:`aclose` fail with ``UPSTREAM_UNAVAILABLE``. Cookies set by
    services are ignored, redirects are not followed. ``https://`` instances
    are reached over TLS with ``ssl_context`` (default: the system's trust
    store, hostname checked).
    """

    def __init__(
        self,
        *,
        max_response_bytes: int = 1 << 20,
        wall_clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout_s: float = 15.0,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        """Larger answers are ``UPSTREAM_ERROR``."""
        self._wall_clock = wall_clock
        """Unix time, for signature timestamps."""
        self._ssl_context = ssl_context
        self._idle_timeout_s = idle_timeout_s
        self._http: Http1Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        """Calls of :meth:`start` that needed a task."""
        self._closed = False
        self._outcomes = Outcomes(log, "instance")
        self.stats = InvokerStats()

    async def invoke(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> InvocationResult | ErrorCode:
        """Call ``service`` with ``action`` on behalf of ``context``'s connection.

        Returns what to deliver, or the error code for the client. Never raises
        (a bug is logged and answered ``INTERNAL``).
        """
        return await self._call(service, action, context, traceparent)

    async def notify(
        self,
        service: Service,
        event_action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> None:
        """Send a lifecycle event (the same POST); ignore the answer.

        Failures are counted in ``stats`` and logged like any call; the caller
        may run this in a task it does not await.
        """
        result = await self._call(service, event_action, context, traceparent)
        if isinstance(result, ErrorCode):
            self.stats.notify_failures += 1

    async def aclose(self) -> None:
        """Close the client and its pooled connections."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def connections(self, url: str) -> tuple[int, int]:
        """Open and idle pooled connections to ``url``."""
        return (0, 0) if self._http is None else self._http.connections(url)

    # Internals

    def _client(self) -> Http1Client:
        if self._http is None:
            if self._closed:  # a call that outlived aclose: a closed client refuses it
                closed = Http1Client()
                closed.closed = True
                return closed
            self._http = Http1Client(
                max_response_bytes=self._max_response_bytes,
                idle_timeout_s=self._idle_timeout_s,
                ssl_context=self._ssl_context,
            )
        return self._http

    def _headers(self, service: Service, body: bytes, context: InvocationContext, tp: str) -> bytes:
        """The per-request header lines, in one formatting (the connection's line kept)."""
        cid = context.connectionId
        opening = _openings.get(cid) or _opening(cid)
        rid = context.requestId
        if not rid.isprintable():  # no CR/LF smuggled into the head
            raise ValueError(_NOT_PRINTABLE)
        secret = service.pool.secret
        sig = f"{HEADER}: {sign(secret, body, _floor(self._wall_clock()))}\r\n" if secret else ""
        if rid:
            return f"{opening}{tp}\r\nX-Wsgate-Request-Id: {rid}\r\n{sig}".encode()
        return f"{opening}{tp}\r\n{sig}".encode()

    def start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Callable[[InvocationResult | ErrorCode], None],
        traceparent: str | None = None,
    ) -> None:
        """Start a call; ``done`` gets what :meth:`invoke` would return, once, later.

        The common case — a free slot and an idle pooled connection — costs
        no task and no future: the request is written at once and ``done``
        runs from the connection's callbacks. Otherwise (waiting for a slot,
        connecting, the keep-alive race, failover) a task of the invoker's
        finishes the call. ``done`` is never called from within ``start``;
        an exception it raises is logged.
        """
        self.stats.calls += 1
        http = self._http
        pool = service.pool
        if http is None or self._closed or not pool.slots.try_acquire():
            self._spawn(self._call_then(service, action, context, traceparent, done))
            return
        call = None  # the slot is held from here: a failure finishes a call to free it
        try:
            timeout_s = pool.timeout_ms / 1000
            body = encode_request(action, context)
            headers = self._headers(service, body, context, ensure_traceparent(traceparent))
            call = _Call(
                self, service, done, body, headers, http.loop.time() + timeout_s, timeout_s
            )
            inst = pool.pick()
            if inst is not None:
                try:
                    target = http.pool(inst.url)
                except ConnectFailed:
                    target = None  # a bad URL: the task marks it down and fails over
                if target is not None:
                    call.inst = inst
                    request = target.encode(headers, body)
                    if target.start(request, call, pool.pipeline):
                        return
            self._spawn(call.attempts(inst, reuse=True))
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", service.name)
            self.stats.failures[ErrorCode.INTERNAL] += 1
            if call is None:
                call = _Call(self, service, done)
            http.loop.call_soon(call.finish, ErrorCode.INTERNAL)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_then(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
        done: Callable[[InvocationResult | ErrorCode], None],
    ) -> None:
        result: InvocationResult | ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE
        try:
            result = await self._call(service, action, context, traceparent, count=False)
        finally:  # cancelled (shutdown): the caller still hears of it
            _tell(done, result)

    async def _call(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
        *,
        count: bool = True,
    ) -> InvocationResult | ErrorCode:
        if count:
            self.stats.calls += 1
        if self._closed:
            return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed")
        try:
            pool = service.pool
            timeout_s = pool.timeout_ms / 1000
            slots = pool.slots
            if not slots.try_acquire():
                try:
                    async with asyncio.timeout(timeout_s):
                        await slots.acquire()
                except TimeoutError:
                    return self._fail(
                        service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "concurrency cap full"
                    )
            try:
                body = encode_request(action, context)
                headers = self._headers(service, body, context, ensure_traceparent(traceparent))
                http = self._client()
                deadline = http.loop.time() + timeout_s
                return await self._attempts(
                    service, http, None, body, headers, deadline, timeout_s, reuse=True
                )
            finally:
                slots.release()
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", service.name)
            self.stats.failures[ErrorCode.INTERNAL] += 1
            return ErrorCode.INTERNAL

    async def _attempts(
        self,
        service: Service,
        http: Http1Client,
        inst: Instance | None,
        body: bytes,
        headers: bytes,
        deadline: float,
        timeout_s: float,
        *,
        reuse: bool,
    ) -> InvocationResult | ErrorCode:
        """POST to ``inst`` (or the next picked), failing over past the unreachable.

        An instance that refuses the connection never saw the request, so the
        next healthy one gets it: at most one try per instance.
        """
        pool = service.pool
        for _ in range(max(1, len(pool.instances))):
            if inst is None:
                inst = pool.pick()
                if inst is None:
                    break
            try:
                target = http.pool(inst.url)
                status, data = await target.send(
                    target.encode(headers, body), deadline, reuse=reuse, depth=pool.pipeline
                )
            except HttpError as exc:
                result = self._outcome(service, inst, 0, None, exc, timeout_s)
            else:
                result = self._outcome(service, inst, status, data, None, timeout_s)
            if result is not None:
                return result
            inst, reuse = None, True
        return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "no healthy instance")

    def _outcome(
        self,
        service: Service,
        inst: Instance,
        status: int,
        data: bytes | None,
        exc: HttpError | None,
        timeout_s: float,
    ) -> InvocationResult | ErrorCode | None:
        """Map one POST's outcome; ``None`` when ``inst`` was not reached (it is down now)."""
        if exc is not None:
            if self._closed:  # cut off by aclose: not the instance's fault
                return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed")
            if isinstance(exc, ResponseTimeout):
                reason = f"no answer in {timeout_s:g}s"
                return self._fail(service, inst, ErrorCode.UPSTREAM_TIMEOUT, reason, down=True)
            if isinstance(exc, ConnectFailed):
                if service.mark_failed(inst):
                    log.warning(
                        "service %s: instance %s unreachable: %s", service.name, inst.url, exc
                    )
                return None
            # dropped mid-answer, not HTTP
            reason = f"{type(exc).__name__}: {exc}"
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, reason, down=True)
        if status == 200:
            if data is None:
                reason = f"answer over {self._max_response_bytes} bytes"
                return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, reason)
            result = decode_result(data)
            if isinstance(result, str):
                return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, f"bad answer: {result}")
            self._outcomes.answered(service, inst)  # _ok, inline: the common answer
            return result
        if status == 202 or status == 204:
            return self._ok(service, inst, InvocationResult())
        if status == 403:
            # The service refuses this action (or, as a connect hook, this
            # connection): the client is told FORBIDDEN; the instance is fine.
            self.stats.failures[ErrorCode.FORBIDDEN] += 1
            return self._ok(service, inst, None)
        # 500/501 come from the handler of this one request: the instance is
        # alive, and taking it out would let one bad action make the whole
        # service unavailable. 502/503/504 and the rest mean the instance (or
        # its proxy) is in trouble.
        down = status >= 500 and status not in (500, 501)
        return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, f"HTTP {status}", down=down)

    @overload
    def _ok(
        self, service: Service, inst: Instance, result: InvocationResult
    ) -> InvocationResult: ...

    @overload
    def _ok(self, service: Service, inst: Instance, result: None) -> ErrorCode: ...

    def _ok(
        self, service: Service, inst: Instance, result: InvocationResult | None
    ) -> InvocationResult | ErrorCode:
        """The instance answered; ``None`` stands for a 403 refusal (``FORBIDDEN``)."""
        self._outcomes.answered(service, inst)
        return ErrorCode.FORBIDDEN if result is None else result

    def _fail(
        self,
        service: Service,
        inst: Instance | None,
        code: ErrorCode,
        reason: str,
        *,
        down: bool = False,
    ) -> ErrorCode:
        self.stats.failures[code] += 1
        return self._outcomes.failed(service, inst, code, reason, down=down)


_floor: Final = math.floor
"""Whole seconds of the signing time: ``int()`` for a clock past 1970, without its
type call (about 400 instructions less per signed call)."""
_NOT_PRINTABLE: Final = "connection or request id is not printable"
_OPENINGS_MAX: Final = 4096
_openings: dict[str, str] = {}
"""The first header line and the next one's name per connection id, the id checked
printable once (a dict probe instead of a check and a formatting per call). At most
``_OPENINGS_MAX`` kept: cleared whole when full (ids of closed connections go then)."""


def _opening(cid: str) -> str:
    """``_openings[cid]``, made; raises ``ValueError`` for an id with a CR/LF (or any
    unprintable character) that would end up in the request head."""
    if not cid.isprintable():
        raise ValueError(_NOT_PRINTABLE)
    if len(_openings) >= _OPENINGS_MAX:
        _openings.clear()
    opening = _openings[cid] = f"X-Wsgate-Connection-Id: {cid}\r\ntraceparent: "
    return opening


def _tell(
    done: Callable[[InvocationResult | ErrorCode], None], result: InvocationResult | ErrorCode
) -> None:
    try:
        done(result)
    except Exception:
        log.exception("invocation callback failed")


class _Call(msgspec.Struct, Pending):
    """A call started by :meth:`HttpInvoker.start`; it holds a slot until finished.

    It is also what its pooled connection answers (:meth:`answer`). A struct, never
    encoded, made whole in one call: in C, with no ``__init__`` frame (about 1,400
    instructions less per call than a class with slots)."""

    invoker: HttpInvoker
    service: Service
    done: Callable[[InvocationResult | ErrorCode], None]
    body: bytes = b""
    headers: bytes = b""
    deadline: float = 0.0
    timeout_s: float = 0.0
    inst: Instance | None = None

    def answer(self, status: int, data: bytes | None, exc: HttpError | None) -> None:
        """The pooled connection's answer (from the protocol's callbacks)."""
        invoker = self.invoker
        inst = self.inst
        assert inst is not None
        if isinstance(exc, Unanswered):  # the keep-alive race: once, on a fresh connection
            invoker._spawn(self.attempts(inst, reuse=False))
            return
        try:
            result = invoker._outcome(self.service, inst, status, data, exc, self.timeout_s)
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", self.service.name)
            invoker.stats.failures[ErrorCode.INTERNAL] += 1
            result = ErrorCode.INTERNAL
        if result is None:  # not reached (cannot happen on a pooled connection)
            invoker._spawn(self.attempts(None, reuse=True))
            return
        self.finish(result)

    async def attempts(self, inst: Instance | None, *, reuse: bool) -> None:
        """The rest of the call, in a task: connect, fail over."""
        invoker = self.invoker
        result: InvocationResult | ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE
        try:
            result = await invoker._attempts(
                self.service,
                invoker._client(),
                inst,
                self.body,
                self.headers,
                self.deadline,
                self.timeout_s,
                reuse=reuse,
            )
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", self.service.name)
            invoker.stats.failures[ErrorCode.INTERNAL] += 1
            result = ErrorCode.INTERNAL
        finally:  # cancelled (shutdown) included
            self.finish(result)

    def finish(self, result: InvocationResult | ErrorCode) -> None:
        self.service.pool.slots.release()
        try:  # what _tell does, inline: one frame less per answered call
            self.done(result)
        except Exception:
            log.exception("invocation callback failed")
