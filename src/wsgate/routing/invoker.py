"""The invoker seam: how a call reaches a service, whatever carries it.

A route resolves an action type to a :class:`~wsgate.routing.instances.
Service`; its pool's ``transport`` (``http``, ``grpc`` or ``nats``) names
the :class:`Invoker` that carries the call. :class:`~wsgate.upstream.
Upstream` holds one invoker per transport and picks by that name: one dict
probe per call.

Every invoker keeps the contract of :class:`~wsgate.routing.http_invoker.
HttpInvoker`, the first one:

- it never raises into the caller: a failure is an
  :class:`~wsgate.protocol.codes.ErrorCode` (``UPSTREAM_TIMEOUT``,
  ``UPSTREAM_UNAVAILABLE``, ``UPSTREAM_ERROR``, ``BAD_REQUEST``,
  ``FORBIDDEN``, ``INTERNAL``), and what the service said stays in the log;
- ``start`` calls ``done`` exactly once, later, never from within itself;
- ``timeout_ms`` and ``max_concurrency`` of the service's pool bound each
  call and the calls in flight;
- instance health is reported to the pool (``mark_failed``/``mark_ok``);
- ``aclose`` ends every call in flight (their ``done`` gets
  ``UPSTREAM_UNAVAILABLE``) and frees every connection;
- ``traceparent`` (W3C Trace Context) is sent with every call: the HTTP
  ``traceparent`` header, a NATS message header ``traceparent``, gRPC
  metadata ``traceparent``. :class:`~wsgate.upstream.Upstream` gives a routed
  call the client's ``meta.traceparent`` or, with ``[tracing]`` on, its
  gateway span's own (docs/observability.md); ``None`` or a malformed value
  is replaced by :func:`~wsgate.routing.trace.ensure_traceparent`'s fresh one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from wsgate.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from wsgate.protocol.envelope import Action, Outbound
    from wsgate.routing.context import InvocationContext
    from wsgate.routing.instances import Service
    from wsgate.routing.results import InvocationResult

__all__ = ["Done", "Invoker", "Unavailable"]

log = logging.getLogger(__name__)

Done = Callable[["InvocationResult | ErrorCode"], None]
"""Gets the outcome of a started call, once."""


class Invoker(Protocol):
    """Carries calls to the services of one transport."""

    def start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None = None,
    ) -> None:
        """Start a call; ``done`` gets what :meth:`invoke` would return, once, later."""

    async def invoke(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> InvocationResult | ErrorCode:
        """Call ``service`` and wait for the outcome. Never raises."""

    async def notify(
        self,
        service: Service,
        event_action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> None:
        """Send a lifecycle event and ignore the answer (failures are counted)."""

    async def aclose(self) -> None:
        """End the calls in flight and free every connection."""


class Unavailable:
    """The invoker of a transport nobody configured: every call is ``UPSTREAM_UNAVAILABLE``.

    Only reachable by a route whose pool names a transport the node has no
    invoker for (a bug in the wiring, logged once per service).
    """

    def __init__(self, transport: str) -> None:
        self._transport = transport
        self._logged: set[str] = set()
        """Services already logged; bounded by the route table's services."""

    def _refuse(self, service: Service) -> ErrorCode:
        if service.name not in self._logged:
            self._logged.add(service.name)
            log.error("service %s: no %s invoker on this node", service.name, self._transport)
        return ErrorCode.UPSTREAM_UNAVAILABLE

    def start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None = None,
    ) -> None:
        asyncio.get_running_loop().call_soon(done, self._refuse(service))

    async def invoke(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> InvocationResult | ErrorCode:
        return self._refuse(service)

    async def notify(
        self,
        service: Service,
        event_action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> None:
        self._refuse(service)

    async def aclose(self) -> None:
        return None
