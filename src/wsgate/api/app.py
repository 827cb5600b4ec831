"""The internal API application: bearer keys, health, and the route modules.

Listens on ``[api] listen``, never the public address. ``/v1/*`` needs
``Authorization: Bearer <key>`` (one of ``[api] keys``); ``/@connections/*``
needs an AWS SigV4 signature (or a bearer key); ``/healthz`` and ``/readyz``
are open so that orchestrators can probe them. ``/metrics`` (Prometheus text,
when the node gives ``metrics``) is open too unless ``metrics_need_key``: then
it needs a bearer key like ``/v1/*`` (401 without).

Every error is JSON, aiohttp's own included (an unknown path, a wrong
method, a body over :data:`MAX_BODY`): ``{"error": message}``, or AWS's
``{"message": ...}`` with ``x-amzn-ErrorType`` under ``/@connections/``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from wsgate.api import aws, v1
from wsgate.api.state import BEARER_OK, STATE, ApiState, json_error

__all__ = ["MAX_BODY", "bearer_ok", "build_app"]

MAX_BODY = 1 << 20
"""Largest request body the internal API reads."""

_OPEN = frozenset({"/healthz", "/readyz"})

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


def build_app(
    state: ApiState,
    keys: Sequence[str],
    *,
    metrics: Callable[[], tuple[bytes, str]] | None = None,
    metrics_need_key: bool = False,
) -> web.Application:
    """The aiohttp application of the internal API for ``state``.

    ``metrics`` renders ``GET /metrics`` (body, content type) per scrape; ``None``:
    no such route.
    """
    encoded = [k.encode() for k in keys if k]
    open_paths = _OPEN if metrics is None or metrics_need_key else _OPEN | {"/metrics"}

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in open_paths:
            return await handler(request)
        bearer = bearer_ok(request.headers.get("Authorization", ""), encoded)
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
    return app
