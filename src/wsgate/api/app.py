"""The internal API application: bearer keys, health, and the route modules.

Listens on ``[api] listen``, never the public address. ``/v1/*`` needs
``Authorization: Bearer <key>`` (one of ``[api] keys``); ``/@connections/*``
needs an AWS SigV4 signature (or a bearer key); ``/healthz`` and ``/readyz``
are open so that orchestrators can probe them. ``/metrics`` (Prometheus text,
when the node gives ``metrics``) is open too unless ``metrics_need_key``: then
it needs a bearer key like ``/v1/*`` (401 without). ``[admin] keys`` are accepted
wherever ``[api] keys`` are; the paths of :func:`admin_only` (the tap,
:mod:`wsgate.api.tap`; a user's disconnect; ``/v1/admin/*``,
:mod:`wsgate.api.admin`) take only an admin key: 401 without a valid key,
403 for a service key. The dashboard's static page (``/admin/``) is open.

Every error is JSON, aiohttp's own included (an unknown path, a wrong
method, a body over :data:`MAX_BODY`): ``{"error": message}``, or AWS's
``{"message": ...}`` with ``x-amzn-ErrorType`` under ``/@connections/``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from wsgate.api import admin, aws, v1
from wsgate.api import tap as tap_api
from wsgate.api.state import BEARER_OK, STATE, ApiState, json_error
from wsgate.logs.recent import RecentErrors

__all__ = ["MAX_BODY", "admin_only", "bearer_ok", "build_app"]

MAX_BODY = 1 << 20
"""Largest request body the internal API reads."""

_OPEN = frozenset({"/healthz", "/readyz"}) | admin.SITE_PATHS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_ok(header: str, keys: Sequence[bytes]) -> bool:
    """``header`` is ``Bearer <one of keys>``; compared in constant time with every key.

    The one check of a bearer key, for the HTTP middleware and the gRPC interceptor.
    """
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode()
    ok = False
    for key in keys:  # compare with every key: time does not reveal which matched
        ok |= hmac.compare_digest(given, key)
    return ok


BEARER_PROTOCOL = "bearer."
"""A browser cannot set ``Authorization`` on a WebSocket: it offers the subprotocol
``bearer.<base64url of the key, unpadded>`` beside ``wsgate.tap`` instead (the server
selects ``wsgate.tap``, never echoes the key)."""


def _authorization(request: web.Request) -> str:
    """The ``Authorization`` header, else (``/v1/tap`` only) the key of a
    :data:`BEARER_PROTOCOL` subprotocol."""
    header = request.headers.get("Authorization", "")
    if header or request.path != "/v1/tap":
        return header
    for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(BEARER_PROTOCOL):
            encoded = offered[len(BEARER_PROTOCOL):]
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return "Bearer " + key.decode()
            except (binascii.Error, UnicodeDecodeError):
                return ""
    return ""


def admin_only(method: str, path: str) -> bool:
    """Only an ``[admin]`` key may do this: open a tap, disconnect a user (every tab,
    and a revocation), read ``/v1/admin/*``. Service keys get 403."""
    if path == "/v1/tap" or path.startswith("/v1/admin/"):
        return True
    return method == "DELETE" and path.startswith("/v1/users/") and path.endswith("/connections")


def build_app(
    state: ApiState,
    keys: Sequence[str],
    admin_keys: Sequence[str] = (),
    taps: tap_api.Taps | None = None,
    *,
    errors: RecentErrors | None = None,
    metrics: Callable[[], tuple[bytes, str]] | None = None,
    metrics_need_key: bool = False,
) -> web.Application:
    """The aiohttp application of the internal API for ``state``.

    ``keys`` are the service keys, ``admin_keys`` the operators'; ``/v1/tap``
    is routed only when ``taps`` is given, ``/v1/admin/errors`` answers
    ``errors`` (an empty ring when ``None``). ``metrics`` renders ``GET /metrics``
    (body, content type) per scrape; ``None``: no such route.
    """
    encoded = [k.encode() for k in keys if k]
    admins = [k.encode() for k in admin_keys if k]
    open_paths = _OPEN if metrics is None or metrics_need_key else _OPEN | {"/metrics"}

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in open_paths:
            return await handler(request)
        header = _authorization(request)
        admin = bearer_ok(header, admins)
        if not admin and admin_only(request.method, path):
            if bearer_ok(header, encoded):
                return json_error(403, "an admin key is required")
            return json_error(401, "missing or invalid admin key")
        bearer = admin | bearer_ok(header, encoded)
        if path.startswith("/@connections/") and not bearer:
            return await handler(request)  # SigV4 is checked by the handler
        if not bearer:
            return json_error(401, "missing or invalid bearer key")
        request[BEARER_OK] = True
        return await handler(request)

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if request.path.startswith("/@connections/"):
                kind = "PayloadTooLargeException" if exc.status == 413 else "BadRequestException"
                return web.json_response(
                    {"message": exc.reason}, status=exc.status, headers={"x-amzn-ErrorType": kind}
                )
            return json_error(exc.status, exc.reason)

    app = web.Application(middlewares=[json_errors, authorize], client_max_size=MAX_BODY)
    app[STATE] = state

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not request.app[STATE].ready:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    if metrics is not None:
        render = metrics

        async def scrape(request: web.Request) -> web.Response:
            body, content_type = render()
            return web.Response(body=body, headers={"Content-Type": content_type})

        app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_routes(v1.routes)
    app.router.add_routes(aws.routes)
    app[admin.ERRORS] = errors if errors is not None else RecentErrors(1)
    app.router.add_routes(admin.routes)
    if taps is not None:
        app[tap_api.TAPS] = taps
        app.router.add_routes(tap_api.routes)
        opened = taps

        async def end_taps(app: web.Application) -> None:
            opened.end_all()  # else cleanup waits its shutdown timeout on each open tap

        app.on_shutdown.append(end_taps)
    return app
