"""The public WebSocket listener: TLS, the HTTP handshake, and the connections.

:func:`start_listener` binds the socket and returns a :class:`Listener`.
Every HTTP request on it goes through one routing function, before any 101:

- not ``config.path``, or not a WebSocket upgrade: ``plain_get(path,
  headers)`` answers if given and returns a response; otherwise a request
  without a valid session is redirected (302) to the sign-in URL and any
  other gets 404;
- an upgrade on ``config.path``: an ``Origin`` outside
  ``config.allowed_origins`` gets 403 (RFC 6455 §4.2.2 / §10.2; no
  ``Origin`` means not a browser, and is allowed); no valid session: the
  upgrade is accepted, one ``@@wsgate/ERROR`` (``UNAUTHENTICATED``, with
  ``signInUrl``) is sent, then a 4401 close; otherwise
  ``handler.open(sink, principal, peer_ip)`` after the 101.

Both refusals write a ``refused`` event line (:mod:`wsgate.logs`; the
peer's address is not known here).

The subprotocol ``wsgate.v1.json`` is answered in the 101 when the client
offers it (RFC 6455 §4.2.2 /subprotocol/); other offers get no subprotocol.
With ``config.compression``, a ``permessage-deflate`` offer we can keep to
is answered too (:mod:`wsgate.transport.deflate`), and the connection's
messages share one compressor.

Lifecycle::

    listener = await start_listener(...)   # bound and accepting
    ...
    await listener.close()                  # stop accepting; connections stay
    await listener.drain(1012)              # close every connection, wait (bounded)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Final

from multidict import CIMultiDict
from picows import (
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from wsgate.auth.principal import AwaitingToken, Principal
from wsgate.config import ServerConfig, parse_listen
from wsgate.logs import event
from wsgate.protocol import SUBPROTOCOL
from wsgate.protocol.builtins import ERROR, ErrorPayload
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Outbound, encode
from wsgate.transport.base import ConnectionHandler, HttpResponse
from wsgate.transport.control import ControlLimit
from wsgate.transport.deflate import negotiate, shared_deflater
from wsgate.transport.framing import encode_frame
from wsgate.transport.listener import CLOSE_GRACE_S, GateListener, ListenerContext
from wsgate.transport.outbound import Flusher
from wsgate.transport.protocol import GateProtocol

__all__ = [
    "Authenticate",
    "HttpResponse",
    "Listener",
    "PlainGet",
    "build_ssl_context",
    "start_listener",
]

Authenticate = Callable[[Mapping[str, str]], Principal | None]
"""Request headers to the session's principal, ``None`` when there is no valid session."""
PlainGet = Callable[[str, Mapping[str, str]], HttpResponse | None]
"""A plain GET (path with query, headers) to a response, ``None`` to decline."""

_log: Final = logging.getLogger("wsgate.transport")


class _PicowsLog(logging.LoggerAdapter[logging.Logger]):
    """picows' logger, as an adapter.

    An adapter, because picows makes a child ``Logger`` per connection when
    given a plain one (memory per connection, design §8). It also demotes
    picows' "WS parser error" reports to INFO: a peer's malformed frame is
    answered with a close code, it is not an error of the gateway, and a
    client must not be able to flood the error log.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if not self.logger.isEnabledFor(level):  # picows' INFO line per connection: off
            return
        if level >= logging.ERROR and isinstance(msg, str) and msg.startswith("WS parser error"):
            level = logging.INFO
        super().log(level, msg, *args, **kwargs)  # type: ignore[arg-type]


_picows_log: Final = _PicowsLog(logging.getLogger("wsgate.transport.picows"), {})


def build_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _response(resp: HttpResponse) -> WSUpgradeResponseWithListener:
    if resp.status == HTTPStatus.SWITCHING_PROTOCOLS:
        raise ValueError("plain_get must not answer 101")
    r = WSUpgradeResponse()
    r.version = b"HTTP/1.1"
    r.status = HTTPStatus(resp.status)
    r.headers = CIMultiDict(resp.headers)
    r.body = resp.body or None
    return WSUpgradeResponseWithListener(r, None)


def _error(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(status, body), None
    )


def _is_upgrade(request: WSUpgradeRequest) -> bool:
    upgrade = request.headers.get("Upgrade", "")
    return "websocket" in upgrade.lower()


def _offers(headers: CIMultiDict[str], name: str) -> bool:
    for value in headers.getall("Sec-WebSocket-Protocol", ()):
        for item in value.split(","):
            if item.strip() == name:
                return True
    return False


class Listener:
    """A bound public listener and its connections.

    Made by :func:`start_listener`. ``close()`` stops accepting;
    ``drain(code)`` closes every connection with ``code`` and waits until
    they are gone (at most the close grace period plus a second).
    """

    __slots__ = ("_closed", "_ctx", "_port", "_server")

    def __init__(self, server: asyncio.Server, ctx: ListenerContext) -> None:
        self._server = server
        self._ctx = ctx
        self._closed = False
        self._port = int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when ``listen`` asked for port 0)."""
        return self._port

    @property
    def flusher(self) -> Flusher:
        """The listener's one writer; its ``publish`` batches a channel's deliveries
        (:mod:`wsgate.transport.batch`) and its ``settle`` must run before a channel's
        members change (the node wires both into the gateway's fan-out and pool)."""
        return self._ctx.flusher

    @property
    def connection_count(self) -> int:
        """WebSocket connections past the handshake and not yet gone."""
        return len(self._ctx.wheel)

    @property
    def slow_consumer_closes(self) -> int:
        """Connections this listener closed 4000 (slow consumer) since it started."""
        return self._ctx.slow_closes

    async def close(self) -> None:
        """Stop accepting connections; open ones are left alone (see :meth:`drain`).

        Does not await ``Server.wait_closed()``, which on Python 3.12+ waits
        for every connection to end.
        """
        if not self._closed:
            self._closed = True
            self._server.close()
        await asyncio.sleep(0)

    async def drain(self, code: int = 1012, reason: str = "") -> None:
        """Stop accepting, close every connection with ``code``, wait until all are gone.

        1012 (service restart) and 1001 (going away) tell clients to
        reconnect at once (design §2). Each connection flushes what it has
        queued first. Bounded: connections still there after the close grace
        period are aborted by their own timers, and this returns at most one
        second later regardless.
        """
        await self.close()
        ctx = self._ctx
        if not ctx.wheel:
            return
        ctx.on_empty = event = asyncio.Event()
        for conn in ctx.connections:
            conn.close(code, reason)
        try:
            await asyncio.wait_for(event.wait(), ctx.close_grace + 1.0)
        except TimeoutError:
            _log.warning("drain: %d connections still open", len(ctx.wheel))
        finally:
            ctx.on_empty = None
            if not ctx.wheel:
                ctx.wheel.stop()


async def start_listener(
    *,
    handler: ConnectionHandler,
    config: ServerConfig,
    authenticate: Authenticate,
    sign_in_url: str,
    plain_get: PlainGet | None = None,
    ssl_context: ssl.SSLContext | None = None,
    control: ControlLimit | None = None,
) -> Listener:
    """Bind ``config.listen`` and serve WebSocket connections on ``config.path``.

    ``ssl_context`` wins; otherwise TLS is on when ``config.tls_cert`` and
    ``config.tls_key`` are both set. ``authenticate`` and ``plain_get`` run
    on the loop for every request, so they must not block. ``control``
    limits each connection's pings and pongs (a refused ping gets no pong;
    too many refusals close 4429); ``None`` leaves them unlimited, though
    pongs still count against ``outbound_high_water_bytes``.
    """
    loop = asyncio.get_running_loop()
    host, port = parse_listen("server.listen", config.listen)
    if ssl_context is None and config.tls_cert and config.tls_key:
        ssl_context = build_ssl_context(config.tls_cert, config.tls_key)

    unauthenticated = Outbound(
        type=ERROR,
        payload=ErrorPayload(
            code=ErrorCode.UNAUTHENTICATED, message="sign in", signInUrl=sign_in_url
        ),
        error=True,
    )
    ctx = ListenerContext(
        loop,
        handler=handler,
        max_message=config.max_message_bytes,
        high_water=config.outbound_high_water_bytes,
        heartbeat_s=config.heartbeat_ms / 1000,
        heartbeat_timeout_s=config.heartbeat_timeout_ms / 1000,
        unauthenticated_frame=encode_frame(0x1, encode(unauthenticated)),
        close_grace=CLOSE_GRACE_S,
        control=control,
    )
    ws_path = config.path
    # A relative sign-in URL that nothing on this listener serves (``serve``'s
    # default "/sign-in" with no site) must not redirect to itself forever.
    sign_in_here = sign_in_url.partition("?")[0] if sign_in_url.startswith("/") else None
    no_sign_in = (
        b"401 Unauthorized: no sign-in page is served here. Sign in through your application,"
        b" or point auth.sign_in_url at its sign-in page.\n"
    )
    allow_any = "*" in config.allowed_origins
    allowed = frozenset(config.allowed_origins)
    protocol_header = ("Sec-WebSocket-Protocol", SUBPROTOCOL)
    compression = config.compression

    def route(request: WSUpgradeRequest) -> GateListener | WSUpgradeResponseWithListener:
        full_path = request.path.decode("latin-1")
        path = full_path.partition("?")[0]
        headers = request.headers
        if path != ws_path or not _is_upgrade(request):
            if plain_get is not None:
                answer = plain_get(full_path, headers)
                if answer is not None:
                    return _response(answer)
            principal = authenticate(headers)
            if principal is None or isinstance(principal, AwaitingToken):
                # No session a plain GET can use (a token is only checked on a WebSocket).
                if path == sign_in_here:
                    return _error(401, no_sign_in)
                return WSUpgradeResponseWithListener(
                    WSUpgradeResponse.create_redirect_response(302, sign_in_url), None
                )
            return _error(404, b"404 Not Found")
        origin = headers.get("Origin")
        if origin is not None and not allow_any and origin not in allowed:
            event("refused", logging.WARNING, code=403, reason="origin not allowed", origin=origin)
            return _error(403, b"403 Forbidden: origin not allowed")
        principal = authenticate(headers)
        if principal is None:
            event("refused", logging.WARNING, code=4401, reason="unauthenticated")
        upgrade_headers: list[tuple[str, str]] = []
        if _offers(headers, SUBPROTOCOL):
            upgrade_headers.append(protocol_header)
        deflater = None
        if compression:
            agreed = negotiate(headers.getall("Sec-WebSocket-Extensions", ()))
            if agreed is not None:
                deflater = shared_deflater(agreed.window_bits)
                upgrade_headers.append(("Sec-WebSocket-Extensions", agreed.response))
        listener = GateListener(ctx, principal, headers.get("User-Agent", ""), deflater)
        if upgrade_headers:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_101_response(upgrade_headers), listener
            )
        return listener

    def factory(request: WSUpgradeRequest) -> GateListener | WSUpgradeResponseWithListener:
        try:
            return route(request)
        except Exception:
            # Never let picows put an exception's text in a 500 body.
            _log.exception("handshake routing failed")
            return _error(500, b"500 Internal Server Error")

    # Computed once: picows keeps the float on every connection's protocol.
    handshake_timeout = config.handshake_timeout_ms / 1000

    def protocol() -> GateProtocol:
        # What ws_create_server (picows 2.3.1) does, with our protocol class:
        # it stops feeding picows at the client's close (protocol.py).
        return GateProtocol(
            factory,
            _picows_log,
            handshake_timeout=handshake_timeout,
            max_frame_size=config.max_message_bytes,
            read_buffer_init_size=config.read_buffer_bytes,
            # Pongs are ours (listener.py): bounded by the outbound buffer and
            # by ``control``; picows' auto-pong would write them unbounded.
            enable_auto_pong=False,
        )

    # loop.create_server, not picows' aiofastnet: measured with 2,000 idle
    # connections, aiofastnet's transport adds about 5 KB per connection
    # (13.7 KB vs 8.5 KB traced under uvloop), and the budget is 10 KB per
    # idle connection with the core (design §8). Auto-ping is off (ours:
    # 4408 with a close frame, heartbeat.py).
    server = await loop.create_server(protocol, host=host, port=port, ssl=ssl_context, backlog=1024)
    return Listener(server, ctx)
