"""Writing a NATS action service in a few lines (``nats.micro``; the ``nats`` extra).

::

    from wsgate.sdk.nats_service import NatsService

    service = NatsService("orders")

    @service.action("orders/GET")
    async def get(action: dict, ctx: Context) -> Reply | list | dict | None:
        return {"type": "orders/GOT", "payload": {"id": action["payload"]["id"]}}

    nc = await nats.connect("nats://127.0.0.1:4222")
    await service.start(nc)        # found by every gateway within its discovery interval

:meth:`NatsService.start` adds a NATS service-API service (``$SRV.PING``,
``$SRV.INFO``, ``$SRV.STATS`` answered by ``nats.micro``) with one endpoint
on ``subject`` (default ``wsgate.<name>``) in queue group ``queue_group``
(default ``<name>``: instances share the calls), whose metadata announces
every handler's pattern in ``wsgate.actions``. Each request is the gateway's
``{"action", "context"}`` body; handlers are matched like routes (exact type,
then the longest ``prefix*``, then ``*``) and return what an HTTP
:class:`~wsgate.sdk.service.Service` handler returns (``None``, an action,
a list of actions, or :class:`~wsgate.sdk.service.Reply`), encoded the same
way. Failures answer with the service API's error headers
(``Nats-Service-Error-Code``), which the gateway maps:

=========================================  ======  ========================
case                                       code    the client gets
=========================================  ======  ========================
the body is not an invocation              400     ``BAD_REQUEST``
the handler raised :class:`Refused`        403     ``FORBIDDEN``
no handler matches the action type         404     ``UPSTREAM_ERROR``
the handler raised anything else (logged)  500     ``UPSTREAM_ERROR``
=========================================  ======  ========================

NATS requests are not signed: who may publish to the subject is a matter of
the NATS server's permissions. Register handlers before :meth:`start`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Final

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service as MicroService

from wsgate.exceptions import Refused
from wsgate.protocol.patterns import PatternTable
from wsgate.routing.nats_discovery import ACTIONS_KEY
from wsgate.routing.table import is_pattern
from wsgate.sdk.service import Handler, decode_invocation, encode_answer

__all__ = ["NatsService", "on_server"]

log = logging.getLogger(__name__)

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def on_server(nc: Client, timeout_s: float = 2.0) -> None:
    """Return once the server has processed everything ``nc`` sent before this call.

    ``nc.flush()`` does not promise that: nats-py (2.16) writes its PING
    straight to the socket, ahead of commands still in its pending buffer (a
    ``SUB`` included), so its PONG may come back before the server has seen
    the subscription. A message through an inbox of ``nc``'s own goes through
    that buffer, after them. Raises ``nats.errors.TimeoutError`` after
    ``timeout_s``.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(inbox, b"")
        await sub.next_msg(timeout=timeout_s)
    finally:
        with contextlib.suppress(NatsError):  # already gone after its one message
            await sub.unsubscribe()


class NatsService:
    """A NATS action service: register handlers with :meth:`action`, then :meth:`start`."""

    def __init__(
        self,
        name: str,
        *,
        subject: str | None = None,
        queue_group: str | None = None,
        version: str = "1.0.0",
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError("name: 1-64 chars of [A-Za-z0-9_-]")
        self.name = name
        self.subject = subject or f"wsgate.{name}"
        """Where the gateway sends this service's requests."""
        self.queue_group = queue_group or name
        self.version = version
        self._patterns: list[str] = []
        self._handlers: PatternTable[Handler] = PatternTable()
        self._micro: MicroService | None = None
        self._nc: Client | None = None

    def action(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: handle actions whose type matches ``pattern`` (announced to gateways)."""
        if not is_pattern(pattern):
            raise ValueError(f"pattern: {pattern!r} is not an action type, prefix* or *")

        def register(handler: Handler) -> Handler:
            self._handlers.add(pattern, handler)
            if pattern not in self._patterns:
                self._patterns.append(pattern)
            return handler

        return register

    async def start(self, nc: Client) -> None:
        """Serve on ``nc``: add the service and its endpoint, flushed to the server.

        Returns once the endpoint's subscription is on the server
        (:func:`on_server`), so a request or discovery round started after
        this finds it.
        """
        if self._micro is not None:
            return
        micro = await add_service(
            nc, name=self.name, version=self.version, queue_group=self.queue_group
        )
        await micro.add_endpoint(
            name=self.name,
            subject=self.subject,
            handler=self.handle,
            metadata={ACTIONS_KEY: ",".join(self._patterns)},
        )
        self._micro, self._nc = micro, nc
        await on_server(nc)

    async def stop(self) -> None:
        """Stop answering: returns once the server has dropped the subscriptions
        (the connection stays the caller's)."""
        micro, self._micro = self._micro, None
        nc, self._nc = self._nc, None
        if micro is not None and nc is not None:
            await micro.stop()
            await on_server(nc)

    async def handle(self, request: Request) -> None:
        """Decode, dispatch to the handler and answer (see the module's table)."""
        invocation = decode_invocation(request.data)
        if invocation is None:
            await request.respond_error("400", "not an invocation")
            return
        action_type: str = invocation.action["type"]
        handler = self._handlers.lookup(action_type)
        if handler is None:
            await request.respond_error("404", "no handler for this action type")
            return
        try:
            result = await handler(invocation.action, invocation.context)
        except Refused as refused:
            await request.respond_error("403", str(refused) or "refused")
            return
        except Exception:
            log.exception("handler for %s failed", action_type)
            await request.respond_error("500", "handler failed")
            return
        await request.respond(encode_answer(result))
