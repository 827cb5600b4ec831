"""The admin dashboard and its endpoints on the internal API.

``GET /admin/`` (and its assets under ``/admin/``) is a static page served
without a key: it holds no data. It asks the operator for an ``[admin]``
key and sends it with every call it makes, to the ``/v1`` endpoints every
key reaches (``/v1/hubs``, ``/v1/routes``, presence, publish, a connection's
disconnect) and to the admin-only ones below, ``/v1/users/{id}/connections``
and ``/v1/tap`` (:data:`wsgate.api.app.ADMIN_ONLY`).

- ``GET /v1/admin/nodes`` — ``{"nodes": [{"node", "self"}]}``: this node,
  then the cluster's other live nodes (one store read, at most 1 s).
- ``GET /v1/admin/errors`` — ``{"errors": [...]}``: this node's recent
  warnings and errors, oldest first (:class:`~wsgate.logs.recent.RecentErrors`).
"""

from __future__ import annotations

import logging
from importlib import resources

from aiohttp import web

from wsgate.api.state import STATE, json_error
from wsgate.logs.recent import RecentErrors

__all__ = ["ERRORS", "SITE_PATHS", "routes"]

log = logging.getLogger("wsgate.api.admin")

ERRORS: web.AppKey[RecentErrors] = web.AppKey("wsgate_recent_errors", RecentErrors)

_ASSETS = {
    "index.html": "text/html",
    "admin.js": "text/javascript",
    "admin.css": "text/css",
}

SITE_PATHS = frozenset({"/admin", "/admin/"} | {f"/admin/{name}" for name in _ASSETS})
"""The dashboard's paths: open (no key), like ``/healthz``."""

routes = web.RouteTableDef()


def _asset(name: str) -> bytes:
    return resources.files("wsgate.api").joinpath("admin_site", name).read_bytes()


@routes.get("/admin")
async def admin_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/admin/")


@routes.get("/admin/")
@routes.get("/admin/{name}")
async def admin_site(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    kind = _ASSETS.get(name)
    if kind is None:
        return json_error(404, "no such file")
    return web.Response(body=_asset(name), content_type=kind, headers={"Cache-Control": "no-cache"})


@routes.get("/v1/admin/nodes")
async def nodes(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = state.gateway.node_id
    if state.bus is None:
        ids: list[str] = [me]
    else:
        try:
            ids = await state.bus.query.nodes()
        except Exception:  # the store's driver error: this node still knows itself
            log.exception("node list unavailable; answering with this node only")
            return web.json_response({"nodes": [{"node": me, "self": True}], "partial": True})
    return web.json_response({"nodes": [{"node": n, "self": n == me} for n in ids]})


@routes.get("/v1/admin/errors")
async def errors(request: web.Request) -> web.Response:
    return web.json_response({"errors": request.app[ERRORS].snapshot()})
