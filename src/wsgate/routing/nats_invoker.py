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
connection closed, invoker closed                 ``UPSTREAM_UNAVAILABLE``
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
import logging
from collections.abc import Coroutine
from typing import Any, Final

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Outbound
from wsgate.routing.context import InvocationContext
from wsgate.routing.http_invoker import InvokerStats
from wsgate.routing.instances import Instance, Service
from wsgate.routing.invoker import Done
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


def _headers(context: InvocationContext, traceparent: str) -> dict[str, str]:
    """The context as NATS headers; raises ValueError if a value could break the header block."""
    headers = {
        "Wsgate-Connection-Id": context.connectionId,
        "Wsgate-Hub": context.hub,
        "traceparent": traceparent,
    }
    if context.userId:
        headers["Wsgate-User"] = context.userId
    if context.channel:
        headers["Wsgate-Channel"] = context.channel
    if context.requestId:
        headers["Wsgate-Request-Id"] = context.requestId
    if not "".join(headers.values()).isprintable():  # no CR/LF smuggled into the block
        raise ValueError("a context value is not printable")
    return headers


class NatsInvoker:
    """Calls NATS services by request/reply on one connection.

    Keeps the :class:`~wsgate.routing.invoker.Invoker` contract. Each call of
    :meth:`start` runs in a task of the invoker's, held in ``_tasks`` until it
    ends (bounded by the calls :class:`~wsgate.upstream.Upstream` admits: its
    per-connection and per-user in-flight caps); :meth:`aclose` cancels them.
    """

    def __init__(self, nc: Client, *, max_response_bytes: int = 1 << 20) -> None:
        self._nc = nc
        self._max_response_bytes = max_response_bytes
        """Larger answers are ``UPSTREAM_ERROR``."""
        self._tasks: set[asyncio.Task[None]] = set()
        """Calls of :meth:`start` in flight; each removes itself when done."""
        self._closed = False
        self._outcomes = Outcomes(log, "subject")
        self.stats = InvokerStats()

    def start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None = None,
    ) -> None:
        """Start a call; ``done`` gets what :meth:`invoke` would return, once, later."""
        self._spawn(self._run(service, action, context, traceparent, done))

    async def invoke(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> InvocationResult | ErrorCode:
        """Call ``service`` and wait for the outcome. Never raises (but may be cancelled)."""
        self.stats.calls += 1
        return await self._call(service, action, context, traceparent)

    async def notify(
        self,
        service: Service,
        event_action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> None:
        """Send a lifecycle event (the same request); ignore the answer (failures counted)."""
        self.stats.calls += 1
        result = await self._call(service, event_action, context, traceparent)
        if isinstance(result, ErrorCode):
            self.stats.notify_failures += 1

    async def aclose(self) -> None:
        """End the calls in flight (their ``done`` gets ``UPSTREAM_UNAVAILABLE``).

        Returns once every task of the invoker has finished. Later calls get
        ``UPSTREAM_UNAVAILABLE``. The connection stays open (the node's).
        """
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # Internals

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
        done: Done,
    ) -> None:
        self.stats.calls += 1
        result: InvocationResult | ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE
        try:
            result = await self._call(service, action, context, traceparent)
        finally:  # cancelled by aclose included: done is told once
            try:
                done(result)
            except Exception:
                log.exception("invocation callback failed")

    async def _call(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
    ) -> InvocationResult | ErrorCode:
        if self._closed:
            return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed")
        pool = service.pool
        timeout_s = pool.timeout_ms / 1000
        if not pool.slots.try_acquire():  # the common case costs no waiting machinery
            try:
                await asyncio.wait_for(pool.slots.acquire(), timeout_s)
            except TimeoutError:
                reason = f"{pool.max_concurrency} calls in flight for {timeout_s:g}s"
                return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, reason)
        try:
            return await self._request(service, action, context, traceparent, timeout_s)
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", service.name)
            self.stats.failures[ErrorCode.INTERNAL] += 1
            return ErrorCode.INTERNAL
        finally:
            pool.slots.release()

    async def _request(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
        timeout_s: float,
    ) -> InvocationResult | ErrorCode:
        inst = service.pick()
        if inst is None:
            return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "no instance")
        body = encode_request(action, context)
        headers = _headers(context, ensure_traceparent(traceparent))
        try:
            msg = await self._nc.request(inst.url, body, timeout=timeout_s, headers=headers)
        except NoRespondersError:
            return self._fail(
                service, inst, ErrorCode.UPSTREAM_UNAVAILABLE, "no responders", down=True
            )
        except NatsTimeout:
            reason = f"no answer in {timeout_s:g}s"
            return self._fail(service, inst, ErrorCode.UPSTREAM_TIMEOUT, reason, down=True)
        except NatsError as exc:  # closed, draining, bad subject: not the service's fault
            return self._fail(service, inst, ErrorCode.UPSTREAM_UNAVAILABLE, str(exc))
        code = msg.headers.get(ERROR_CODE_HEADER) if msg.headers else None
        if code is not None:
            assert msg.headers is not None
            mapped = SERVICE_ERRORS.get(code, ErrorCode.UPSTREAM_ERROR)
            text = msg.headers.get("Nats-Service-Error", "")[:200]
            self._answered(service, inst)
            return self._fail(service, inst, mapped, f"service error {code}: {text}")
        data = msg.data
        if len(data) > self._max_response_bytes:
            reason = f"answer over {self._max_response_bytes} bytes"
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, reason)
        if not data:
            self._answered(service, inst)
            return InvocationResult()
        result = decode_result(data)
        if isinstance(result, str):
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, f"bad answer: {result}")
        self._answered(service, inst)
        return result

    def _answered(self, service: Service, inst: Instance) -> None:
        """``inst`` answered: it is alive, and its service's failures may be logged again."""
        self._outcomes.answered(service, inst)

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
