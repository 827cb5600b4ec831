"""Writing an HTTP action service in a few lines (aiohttp).

::

    service = wsgate.sdk.Service(secret="shared-hmac-secret")

    @service.action("orders/GET")
    async def get(action: dict, ctx: Context) -> Reply | list | None:
        return [{"type": "orders/GOT", "payload": {"id": action["payload"]["id"]}}]

    web.run_app(service.app(), port=9000)   # POST /actions

Every request's ``X-Wsgate-Signature`` is checked against ``secret`` (or any
of several while rotating) before anything else: a missing, bad or stale one
gets ``401``. A body that is not an invocation gets ``400``, an action no
handler matches ``404``, a handler that raises ``500`` (details logged, never
sent). Handlers return:

- ``None``: ``204`` (nothing now; push later with :class:`~wsgate.sdk.Publisher`);
- a list of actions, or one action (a dict with ``type``): the replies;
- :class:`Reply`: replies and publishes (``{"to": target, "action": ...}``).

Handlers are matched like routes: exact type, then the longest ``prefix*``,
then ``*``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from aiohttp import web

from wsgate.exceptions import ConfigError, Refused
from wsgate.protocol.patterns import PatternTable
from wsgate.routing.context import InvocationContext
from wsgate.routing.signature import HEADER, verify

__all__ = [
    "Context",
    "Handler",
    "HandlerResult",
    "Invocation",
    "Refused",
    "Reply",
    "Service",
    "decode_invocation",
    "encode_answer",
]

log = logging.getLogger(__name__)

Context = InvocationContext
"""The verified context of an invocation (wire names: ``ctx.connectionId``…)."""


@dataclass
class Reply:
    """A handler's answer: ``actions`` back to the caller, ``publish`` to targets.

    Each ``publish`` item is ``{"to": {"connection"|"user"|"channel"|"hub": id},
    "action": {...}}``, optionally with ``"exclude": {"connection": id}``.
    """

    actions: list[dict[str, Any]] = field(default_factory=list)
    publish: list[dict[str, Any]] = field(default_factory=list)
    claims: dict[str, Any] | None = None
    """Connect hooks only: ``{"name"?, "roles"?, "teams"?, "orgs"?}`` added to the session."""


HandlerResult = Reply | list[dict[str, Any]] | dict[str, Any] | None
Handler = Callable[[dict[str, Any], InvocationContext], Awaitable[HandlerResult]]


class Invocation(msgspec.Struct):
    """A decoded invocation request: the action (a dict) and its context."""

    action: dict[str, Any]
    context: InvocationContext


_decoder: Final = msgspec.json.Decoder(Invocation)
_encoder: Final = msgspec.json.Encoder()


def decode_invocation(body: bytes) -> Invocation | None:
    """The invocation in ``body``, or ``None`` when it is not one (no ``action.type`` included)."""
    try:
        invocation = _decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return invocation if isinstance(invocation.action.get("type"), str) else None


def encode_answer(result: HandlerResult) -> bytes:
    """A handler's result as an answer body; ``b""`` when there is nothing to answer."""
    if result is None:
        return b""
    answer: dict[str, Any] = {}
    if isinstance(result, Reply):
        if result.actions:
            answer["reply"] = result.actions
        if result.publish:
            answer["publish"] = result.publish
        if result.claims is not None:
            answer["claims"] = result.claims
    elif isinstance(result, dict):
        answer["reply"] = [result]
    else:
        answer["reply"] = list(result)
    return _encoder.encode(answer) if answer else b""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Service:
    """An HTTP action service: register handlers, then serve :meth:`app`."""

    def __init__(
        self,
        secret: str | Sequence[str],
        *,
        path: str = "/actions",
        tolerance_s: float = 300,
        max_body_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secrets = [secret] if isinstance(secret, str) else list(secret)
        if not secrets or not all(secrets):
            raise ConfigError(
                "secret", "a Service needs the non-empty secret it shares with the gateway"
            )
        self._secrets = secrets
        self._path = path
        self._tolerance_s = tolerance_s
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._handlers: PatternTable[Handler] = PatternTable()

    def action(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: handle actions whose type matches ``pattern``."""

        def register(handler: Handler) -> Handler:
            self._handlers.add(pattern, handler)
            return handler

        return register

    def app(self) -> web.Application:
        """A new ``aiohttp`` application serving ``POST <path>``."""
        app = web.Application(client_max_size=self._max_body_bytes)
        app.router.add_post(self._path, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Verify, decode, dispatch to the handler and encode its answer."""
        body = await request.read()
        if not verify(
            self._secrets, request.headers.get(HEADER), body, self._clock(), self._tolerance_s
        ):
            return _error(401, "bad signature")
        invocation = decode_invocation(body)
        if invocation is None:
            return _error(400, "not an invocation")
        action_type: str = invocation.action["type"]
        handler = self._handlers.lookup(action_type)
        if handler is None:
            return _error(404, "no handler for this action type")
        try:
            result = await handler(invocation.action, invocation.context)
        except Refused as refused:
            return _error(403, str(refused) or "refused")
        except Exception:
            log.exception("handler for %s failed", action_type)
            return _error(500, "handler failed")
        return self._answer(result)

    @staticmethod
    def _answer(result: HandlerResult) -> web.Response:
        body = encode_answer(result)
        if not body:
            return web.Response(status=204)
        return web.Response(body=body, content_type="application/json")
