"""Writing an HTTP action service in a few lines: an ASGI app with a fast server of its own.

::

    service = wsgate.sdk.Service(secret="shared-hmac-secret")

    @service.action("orders/GET")
    async def get(action: dict, ctx: Context) -> Reply | list | None:
        return [{"type": "orders/GOT", "payload": {"id": action["payload"]["id"]}}]

    service.run("127.0.0.1", 9000)              # POST /actions, built-in httptools server
    # or: uvicorn module:service | Starlette(routes=[Mount("/svc", app=service)])
    # or: web.run_app(service.app(), port=9000)  (aiohttp)

Every way in goes through :meth:`Service.dispatch` (the built-in server
straight from its parser; ASGI and aiohttp through :meth:`Service.respond`,
which awaits it), so the answers are the same whichever server runs it.
``X-Wsgate-Signature`` is checked against ``secret`` (or any of several while
rotating) before anything else: a missing, bad or stale one gets ``401``. A
body that is not an invocation gets ``400``, an action no handler matches
``404``, :class:`Refused` ``403``, a handler that raises ``500`` (details
logged, never sent); another path ``404``, another method ``405``; a body over
``max_body_bytes`` ``413``.
Handlers return:

- ``None``: ``204`` (nothing now; push later with :class:`~wsgate.sdk.Publisher`);
- a list of actions, or one action (a dict with ``type``): the replies;
- :class:`Reply`: replies and publishes (``{"to": target, "action": ...}``).

Handlers are matched like routes: exact type, then the longest ``prefix*``,
then ``*``. A handler may be a plain ``def`` (:data:`SyncHandler`); it, and an
``async def`` that never awaits (:mod:`wsgate.sdk.eager`), are answered
without a task. Each handler runs in a ``contextvars`` context of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from wsgate.exceptions import ConfigError, Refused
from wsgate.protocol.patterns import PatternTable
from wsgate.routing.context import InvocationContext
from wsgate.routing.signature import HEADER, verify
from wsgate.sdk.eager import eager
from wsgate.sdk.server import Answer, HttpServer, ServerLimits, run

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "Answer",
    "Context",
    "Handler",
    "HandlerResult",
    "Invocation",
    "Refused",
    "Reply",
    "Service",
    "SyncHandler",
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
"""A coroutine handler (``async def``): what every service (HTTP, NATS) takes."""
SyncHandler = Callable[[dict[str, Any], InvocationContext], HandlerResult]
"""A plain ``def`` handler (:class:`Service` only): answered without a task, as is an
``async def`` one that never awaits (:mod:`wsgate.sdk.eager`)."""

H = TypeVar("H", Handler, SyncHandler)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Invocation(msgspec.Struct):
    """A request body: the action and the connection's context."""

    action: dict[str, Any]
    context: InvocationContext


_decoder: Final = msgspec.json.Decoder(Invocation)
_encoder: Final = msgspec.json.Encoder()
_HEADER_KEY: Final = HEADER.lower().encode()
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


def decode_invocation(body: bytes) -> Invocation | None:
    """The invocation in ``body``, or ``None`` when it is not one (no ``action.type`` included).

    Shared by every transport's service side (HTTP here, NATS in :mod:`.nats_service`).
    """
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


def error(status: int, message: str) -> Answer:
    """The answer of an error: ``{"error": message}``."""
    return status, _encoder.encode({"error": message})


class Service:
    """An HTTP action service: register handlers, then serve it.

    Ways to serve, all answering through :meth:`respond`: :meth:`run` /
    :meth:`serve` (the built-in httptools server, the fast one); the service
    itself as an ASGI app (HTTP and lifespan; mountable at a sub-path); or
    :meth:`app`, an aiohttp application.
    """

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
        self._bpath = path.encode()
        self._tolerance_s = tolerance_s
        self.max_body_bytes = max_body_bytes
        """Largest request body read; a larger one is answered ``413``."""
        self._clock = clock
        self._handlers: PatternTable[Handler | SyncHandler] = PatternTable()

    def action(self, pattern: str) -> Callable[[H], H]:
        """Decorator: handle actions whose type matches ``pattern`` (``async def``
        or plain ``def``: see :data:`SyncHandler`)."""

        def register(handler: H) -> H:
            self._handlers.add(pattern, eager(handler))  # (an async def that never awaits:
            return handler  # a plain call, see wsgate.sdk.eager)

        return register

    # -- the one path -------------------------------------------------------------------------

    def route(self, method: bytes, path: bytes) -> Answer | None:
        """``None`` when ``method path`` is this service's; else the error answer.

        ``path`` may carry a query string (ignored). Servers call this once
        the head is read, so a request elsewhere is refused before its body.
        """
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        if path != self._bpath:
            return error(404, "not found")
        if method != b"POST":
            return error(405, "method not allowed")
        return None

    def dispatch(self, signature: str | None, body: bytes) -> Answer | Awaitable[Answer]:
        """Verify, decode, call the handler and encode its answer: the answer, or an
        awaitable of it when the handler is a coroutine (or returns another awaitable).

        The built-in server calls this straight from its parser, so a handler
        that returns a result (a plain ``def``) costs no task, no coroutine and
        no loop iteration; every other server goes through :meth:`respond`.
        Never raises but what a handler raises that is not an ``Exception``.
        """
        if not verify(self._secrets, signature, body, self._clock(), self._tolerance_s):
            return error(401, "bad signature")
        invocation = decode_invocation(body)
        if invocation is None:
            return error(400, "not an invocation")
        action_type: str = invocation.action["type"]
        handler = self._handlers.lookup(action_type)
        if handler is None:
            return error(404, "no handler for this action type")
        try:  # in a context of its own, as a task would run it
            result = copy_context().run(handler, invocation.action, invocation.context)
        except Exception as exc:
            return _failed(action_type, exc)
        if isinstance(result, Awaitable):
            return _finish(action_type, result)
        return _answer(result)

    async def respond(self, signature: str | None, body: bytes) -> Answer:
        """:meth:`dispatch`, awaited: the answer to a request (never raises).

        ``signature`` is the request's ``X-Wsgate-Signature`` (``None`` when
        absent). A failing handler is logged and answered 500.
        """
        answer = self.dispatch(signature, body)
        return answer if isinstance(answer, tuple) else await answer

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application (``http`` and ``lifespan``; not ``websocket``).

        Mounted at a sub-path, the service's ``path`` is taken relative to
        ``root_path``. The body is read up to ``max_body_bytes`` (a longer one,
        or a longer ``Content-Length``, is answered 413 unread).
        """
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            raise ValueError(f"wsgate.sdk.Service serves HTTP, not {kind!r}")
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        answer = self.route(str(scope.get("method", "")).encode(), path.encode())
        if answer is None:
            answer = await self._asgi_body(scope, receive)
        status, body = answer
        headers = _JSON_HEADERS if body else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _asgi_body(self, scope: Scope, receive: Receive) -> Answer:
        signature: str | None = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER_KEY:
                signature = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return error(413, "body too large")
        chunks: list[bytes] = []
        size = 0
        for _ in range(self.max_body_bytes + 1):  # each message but the last carries a byte
            message = await receive()
            if message["type"] == "http.disconnect":
                return error(400, "client went away")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return error(413, "body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return await self.respond(signature, b"".join(chunks))

    # -- other servers -------------------------------------------------------------------------

    async def serve(
        self, host: str = "127.0.0.1", port: int = 9000, limits: ServerLimits | None = None
    ) -> HttpServer:
        """Start the built-in server (:mod:`wsgate.sdk.server`) and return it once listening.

        Stop it with ``await server.aclose()`` (graceful: answers in flight
        are sent, then connections close).
        """
        server = HttpServer(self, limits or ServerLimits())
        await server.start(host, port)
        return server

    def run(
        self, host: str = "127.0.0.1", port: int = 9000, limits: ServerLimits | None = None
    ) -> None:
        """Serve with the built-in server until SIGINT/SIGTERM (uvloop when installed)."""
        run(HttpServer(self, limits or ServerLimits()), host, port)

    def app(self) -> web.Application:
        """A new ``aiohttp`` application serving ``POST <path>`` (slower than :meth:`serve`)."""
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            status, body = await self.respond(request.headers.get(HEADER), await request.read())
            return web.Response(
                status=status, body=body or None, content_type="application/json" if body else None
            )

        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post(self._path, handle)
        return app


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer ASGI lifespan events: nothing to start or stop, so each completes."""
    for _ in range(2):
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _finish(action_type: str, pending: Awaitable[HandlerResult]) -> Answer:
    try:
        result = await pending
    except Exception as exc:
        return _failed(action_type, exc)
    return _answer(result)


def _failed(action_type: str, exc: Exception) -> Answer:
    """The answer of a handler that raised: 403 for :class:`Refused`, else 500 (logged)."""
    if isinstance(exc, Refused):
        return error(403, str(exc) or "refused")
    log.error("handler for %s failed", action_type, exc_info=exc)
    return error(500, "handler failed")


def _answer(result: HandlerResult) -> Answer:
    body = encode_answer(result)
    return (200, body) if body else (204, b"")
