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
the next healthy instance, trying each instance at most once.
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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, overload

import aiohttp
import msgspec

from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Outbound
from wsgate.routing.context import InvocationContext
from wsgate.routing.instances import Instance, Service
from wsgate.routing.results import InvocationResult, decode_result
from wsgate.routing.signature import HEADER, sign
from wsgate.routing.trace import ensure_traceparent

__all__ = ["HttpInvoker", "InvokerStats"]

log = logging.getLogger(__name__)

_CHUNK: Final = 65536


class _Request(msgspec.Struct):
    action: Any
    context: InvocationContext


_encoder: Final = msgspec.json.Encoder()


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
    """Calls HTTP services over one pooled keep-alive ``aiohttp.ClientSession``.

    The session is created on first use and closed by :meth:`aclose`; calls
    after :meth:`aclose` fail with ``UPSTREAM_UNAVAILABLE``. Cookies set by
    services are ignored, redirects are not followed.
    """

    def __init__(
        self,
        *,
        max_response_bytes: int = 1 << 20,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        """Larger answers are ``UPSTREAM_ERROR``."""
        self._wall_clock = wall_clock
        """Unix time, for signature timestamps."""
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._latched: dict[str, set[str]] = {}
        """Failure kinds already logged per service, cleared by a success."""
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
        """Close the session and its pooled connections."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # Internals

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": "wsgate"},
                raise_for_status=False,
            )
        return self._session

    async def _call(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
    ) -> InvocationResult | ErrorCode:
        self.stats.calls += 1
        if self._closed:
            return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "invoker closed")
        try:
            timeout_s = service.timeout_ms / 1000
            slots = service.pool.slots
            if slots.locked():
                try:
                    async with asyncio.timeout(timeout_s):
                        await slots.acquire()
                except TimeoutError:
                    return self._fail(
                        service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "concurrency cap full"
                    )
            else:
                await slots.acquire()  # free: returns at once
            try:
                body = _encoder.encode(_Request(action, context))
                headers = {
                    "Content-Type": "application/json",
                    "X-Wsgate-Connection-Id": context.connectionId,
                    "traceparent": ensure_traceparent(traceparent),
                }
                if context.requestId:
                    headers["X-Wsgate-Request-Id"] = context.requestId
                if service.secret:
                    headers[HEADER] = sign(service.secret, body, int(self._wall_clock()))
                # An instance that refuses the connection never saw the request,
                # so the next healthy one gets it: at most one try per instance.
                for _ in range(max(1, len(service.pool.instances))):
                    inst = service.pick()
                    if inst is None:
                        break
                    result = await self._post(service, inst, body, headers, timeout_s)
                    if result is not None:
                        return result
                return self._fail(
                    service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "no healthy instance"
                )
            finally:
                slots.release()
        except Exception:
            log.exception("service %s: invocation failed unexpectedly", service.name)
            self.stats.failures[ErrorCode.INTERNAL] += 1
            return ErrorCode.INTERNAL

    async def _post(
        self,
        service: Service,
        inst: Instance,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
    ) -> InvocationResult | ErrorCode | None:
        """One POST to ``inst``; ``None`` when it was not reached (it is down now)."""
        try:
            async with self._client().post(
                inst.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                if status == 200:
                    data = await self._read(resp)
                elif status in (202, 204):
                    return self._ok(service, inst, InvocationResult())
                elif status == 403:
                    # The service refuses this action (or, as a connect hook, this
                    # connection): the client is told FORBIDDEN; the instance is fine.
                    self.stats.failures[ErrorCode.FORBIDDEN] += 1
                    return self._ok(service, inst, None)
                else:
                    # 500/501 come from the handler of this one request: the
                    # instance is alive, and taking it out would let one bad
                    # action make the whole service unavailable. 502/503/504
                    # and the rest mean the instance (or its proxy) is in trouble.
                    down = status >= 500 and status not in (500, 501)
                    return self._fail(
                        service, inst, ErrorCode.UPSTREAM_ERROR, f"HTTP {status}", down=down
                    )
        except TimeoutError:
            return self._fail(
                service, inst, ErrorCode.UPSTREAM_TIMEOUT, f"no answer in {timeout_s:g}s", down=True
            )
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            if service.mark_failed(inst):
                log.warning("service %s: instance %s unreachable: %s", service.name, inst.url, exc)
            return None
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, reason, down=True)
        if data is None:
            reason = f"answer over {self._max_response_bytes} bytes"
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, reason)
        result = decode_result(data)
        if isinstance(result, str):
            return self._fail(service, inst, ErrorCode.UPSTREAM_ERROR, f"bad answer: {result}")
        return self._ok(service, inst, result)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, or ``None`` past ``max_response_bytes`` (read no further)."""
        limit = self._max_response_bytes
        if resp.content_length is not None and resp.content_length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):  # ends by limit or EOF
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

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
        if inst.failures and service.mark_ok(inst):
            log.info("service %s: instance %s is back", service.name, inst.url)
        if self._latched:
            self._latched.pop(service.name, None)
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
        if down and inst is not None and service.mark_failed(inst):
            log.warning(
                "service %s: instance %s down for %.0fs after %s: %s",
                service.name,
                inst.url,
                inst.down_until - service.pool.clock(),
                code,
                reason,
            )
            return code
        seen = self._latched.setdefault(service.name, set())
        if code not in seen:
            seen.add(code)
            where = inst.url if inst is not None else "-"
            log.warning("service %s (%s): %s: %s", service.name, where, code, reason)
        return code
