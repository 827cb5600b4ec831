"""``/v1/*``: publish, connections, channels, presence, hubs, routes, registration.

Every handler answers JSON; errors are ``{"error": "..."}`` with a 4xx status
and a message fit for the calling service (never internal details).
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from wsgate.api import ops
from wsgate.api.state import STATE, json_error, remote_bus
from wsgate.auth.revocations import sid_key, user_key
from wsgate.cluster.query import ANSWER_TIMEOUT_S, Found
from wsgate.cluster.views import describe, local_hubs
from wsgate.logs import event
from wsgate.routing.probe import reachable
from wsgate.typing import ConnectionId

__all__ = ["routes"]

routes = web.RouteTableDef()


class _Registration(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    actions: list[str]
    ttl: float = 30.0


_registration = msgspec.json.Decoder(_Registration)


class _Revocation(msgspec.Struct, forbid_unknown_fields=True):
    sid: str | None = None
    user: str | None = None
    notBefore: float | None = None
    """With ``user``: credentials issued (``iat``) before it are refused (default: now)."""


_revocation = msgspec.json.Decoder(_Revocation)


@routes.post("/v1/publish")
async def publish(request: web.Request) -> web.Response:
    try:
        delivered, ack = ops.publish(
            request.app[STATE], await request.read(), request.headers.get("traceparent")
        )
    except ops.Refused as exc:
        return _refused(exc)
    if ack is None:
        return web.json_response({"delivered": delivered}, status=202)
    return web.json_response({"delivered": delivered, "id": ack}, status=202)


@routes.get("/v1/deliveries/{id}")
async def delivery(request: web.Request) -> web.Response:
    ack = request.match_info["id"]
    try:
        state = await ops.delivery_state(request.app[STATE], ack)
    except ops.Refused as exc:
        return _refused(exc)
    return web.json_response({"id": ack, "state": state})


STATUS = {
    ops.Problem.BAD_REQUEST: 400,
    ops.Problem.FORBIDDEN: 403,
    ops.Problem.NOT_FOUND: 404,
    ops.Problem.TOO_LARGE: 413,
    ops.Problem.UPSTREAM_ERROR: 502,
    ops.Problem.UNAVAILABLE: 503,
    ops.Problem.TIMEOUT: 504,
}
"""The HTTP status of each :class:`~wsgate.api.ops.Problem`."""


def _refused(exc: ops.Refused) -> web.Response:
    """A refusal as ``{"error"}`` (and ``"code"`` for a refused join) with its status."""
    body: dict[str, str] = {"error": exc.message}
    if exc.code is not None:
        body["code"] = exc.code.value
    return web.json_response(body, status=STATUS[exc.problem])


_JSON = "application/json"

PARTIAL_HEADER = "X-Wsgate-Partial"
"""Names the nodes missing from a cluster-wide answer (absent when none is)."""


@routes.get("/v1/connections/{id}")
async def get_connection(request: web.Request) -> web.Response:
    """A connection's status; in a cluster its node answers (at most ``ANSWER_TIMEOUT_S``)."""
    bus = remote_bus(request)
    if bus is not None:
        found, body = await bus.query.connection(ConnectionId(request.match_info["id"]))
        if found is Found.FOUND:
            return web.Response(body=body, content_type=_JSON)
        if found is Found.GONE:
            return json_error(404, "no such connection")
        node = request.match_info["id"].partition(".")[0]
        return json_error(504, f"node {node} did not answer within {ANSWER_TIMEOUT_S:g} s")
    try:
        conn = ops.connection(request.app[STATE], request.match_info["id"])
    except ops.Refused as exc:
        return _refused(exc)
    return web.json_response(describe(conn))


@routes.delete("/v1/connections/{id}")
async def delete_connection(request: web.Request) -> web.Response:
    """204 once closed here; 202 when its node was told (the close happens there)."""
    try:
        here = ops.disconnect(request.app[STATE], request.match_info["id"])
    except ops.Refused as exc:
        return _refused(exc)
    return web.Response(status=204 if here else 202)


@routes.delete("/v1/users/{user}/connections")
async def delete_user_connections(request: web.Request) -> web.Response:
    """Revocation: every tab of the user is closed with 4403 (do not reconnect), and a
    "not before now" revocation refuses the user's current credentials at the next handshake."""
    user = request.match_info["user"]
    try:
        disconnected = await ops.revoke_user(request.app[STATE], user)
    except ops.Refused as exc:
        return _refused(exc)
    event("revoked", user=user, count=disconnected, remote=request.remote)
    return web.json_response({"disconnected": disconnected})


@routes.post("/v1/revocations")
async def revoke(request: web.Request) -> web.Response:
    """``{sid}`` or ``{user, notBefore?}``: held cluster-wide for ``auth.revocation_ttl_s``.

    This node closes the connections it covers at once (4403); the others at
    their next read of the store (``auth.revocation_poll_ms``). ``200
    {revoked, notBefore, disconnected}`` (``disconnected``: on this node).
    """
    try:
        body = _revocation.decode(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return json_error(400, f"bad revocation: {exc}")
    if (body.sid is None) == (body.user is None) or not (body.sid or body.user):
        return json_error(400, "give exactly one of sid and user")
    if body.sid is not None and body.notBefore is not None:
        return json_error(400, "notBefore goes with user")
    state = request.app[STATE]
    if body.sid is not None:
        key, not_before = sid_key(body.sid), time.time()
    else:
        assert body.user is not None
        key = user_key(body.user)
        not_before = time.time() if body.notBefore is None else body.notBefore
    try:
        await ops.revoke(state, key, not_before)
    except ops.Refused as exc:
        return _refused(exc)
    assert state.revocations is not None
    closed = state.revocations.enforce(state.gateway.pool.connections.values())
    return web.json_response({"revoked": key, "notBefore": not_before, "disconnected": closed})


@routes.put("/v1/connections/{id}/channels/{addr:.+}")
async def join_channel(request: web.Request) -> web.Response:
    """Join a connection server-side, through the same pipeline as a client's JOIN.

    Here: ``200`` once joined (the connection got ``JOINED``), or the refusal
    as ``{"error", "code"}`` with its status (:data:`STATUS`). On another
    node: ``202``; that node answers a refusal by logging and counting it.
    """
    addr = request.match_info["addr"]
    try:
        joined = await ops.join(request.app[STATE], request.match_info["id"], addr)
    except ops.Refused as exc:
        return _refused(exc)
    if joined is None:
        return web.json_response({"channel": addr}, status=202)
    return web.json_response({"channel": joined.address, "count": joined.count})


@routes.delete("/v1/connections/{id}/channels/{addr:.+}")
async def leave_channel(request: web.Request) -> web.Response:
    try:
        here = ops.leave(request.app[STATE], request.match_info["id"], request.match_info["addr"])
    except ops.Refused as exc:
        return _refused(exc)
    return web.Response(status=204 if here else 202)


@routes.get("/v1/channels/{addr:.+}/presence")
async def presence(request: web.Request) -> web.Response:
    """Members of a channel; in a cluster, of every live node (read from the presence store)."""
    address = request.match_info["addr"]
    try:
        members = await ops.presence(request.app[STATE], address)
    except ops.Refused as exc:
        return _refused(exc)
    body = {"channel": address, "count": len(members), "members": members}
    return web.Response(body=msgspec.json.encode(body), content_type=_JSON)


@routes.get("/v1/channels/{addr:.+}")
async def get_channel(request: web.Request) -> web.Response:
    """A channel's effective options and member count (after ``.../presence``: routes match
    in order)."""
    try:
        body = await ops.channel(request.app[STATE], request.match_info["addr"])
    except ops.Refused as exc:
        return _refused(exc)
    return web.Response(body=msgspec.json.encode(body), content_type=_JSON)


@routes.get("/v1/hubs")
async def hubs(request: web.Request) -> web.Response:
    """Hubs and their channels; in a cluster, summed over the nodes that answer in time."""
    state = request.app[STATE]
    if state.bus is None:
        body = msgspec.json.encode(local_hubs(state.gateway.pool))
        return web.Response(body=body, content_type=_JSON)
    gathered = await state.bus.query.hubs()
    headers = {PARTIAL_HEADER: ",".join(gathered.missing)} if gathered.missing else None
    return web.Response(
        body=msgspec.json.encode(gathered.hubs), content_type=_JSON, headers=headers
    )


@routes.get("/v1/routes")
async def list_routes(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].routes.snapshot())


@routes.put("/v1/services/{name}")
async def register(request: web.Request) -> web.Response:
    try:
        body = _registration.decode(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return json_error(400, f"bad registration: {exc}")
    name = request.match_info["name"]
    state = request.app[STATE]
    try:
        state.routes.register(name, body.url, body.actions, body.ttl)
    except ValueError as exc:
        return json_error(400, str(exc))
    if state.bus is not None:
        state.bus.routes.registered(name, body.url, body.actions, body.ttl)
    ok = await reachable(body.url)
    if not ok:
        state.routes.unreachable(name, body.url)
    return web.json_response({"service": name, "ttl": body.ttl, "reachable": ok})


@routes.delete("/v1/services/{name}")
async def unregister(request: web.Request) -> web.Response:
    url = request.query.get("url", "")
    state = request.app[STATE]
    if not state.routes.unregister(request.match_info["name"], url):
        return json_error(404, "no such registered instance")
    if state.bus is not None:
        state.bus.routes.unregistered(request.match_info["name"], url)
    return web.Response(status=204)
