"""``/v1/*``: publish, connections, channels, presence, hubs, routes, registration.

Every handler answers JSON; errors are ``{"error": "..."}`` with a 4xx status
and a message fit for the calling service (never internal details).
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from aiohttp import web

from wsgate.api.state import STATE, ApiState, json_error, remote_bus
from wsgate.auth.revocations import sid_key, user_key
from wsgate.cluster.query import ANSWER_TIMEOUT_S, Found
from wsgate.cluster.views import describe, local_hubs
from wsgate.core.connection import Connection
from wsgate.core.gateway import JoinRefused
from wsgate.core.pool import Channel
from wsgate.delivery import deliver
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import parse_address
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.routing.probe import reachable
from wsgate.routing.results import Publish
from wsgate.typing import ChannelAddress, ConnectionId, UserId

__all__ = ["routes"]

routes = web.RouteTableDef()

_publish = msgspec.json.Decoder(Publish)


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
log = logging.getLogger("wsgate.api")


def _connection(request: web.Request) -> Connection | web.Response:
    cid = ConnectionId(request.match_info["id"])
    conn = request.app[STATE].gateway.pool.connections.get(cid)
    if conn is None:
        return json_error(404, "no such connection on this node")
    return conn


@routes.post("/v1/publish")
async def publish(request: web.Request) -> web.Response:
    try:
        body = _publish.decode(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return json_error(400, f"bad publish: {exc}")
    delivered = deliver(request.app[STATE].gateway, body)
    return web.json_response({"delivered": delivered}, status=202)


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
    conn = _connection(request)
    if isinstance(conn, web.Response):
        return conn
    return web.json_response(describe(conn))


@routes.delete("/v1/connections/{id}")
async def delete_connection(request: web.Request) -> web.Response:
    bus = remote_bus(request)
    if bus is not None:  # on another node: tell it (202: the close happens there)
        bus.disconnect(request.match_info["id"], CloseCode.NORMAL, "disconnected by the service")
        return web.Response(status=202)
    conn = _connection(request)
    if isinstance(conn, web.Response):
        return conn
    conn.sink.close(CloseCode.NORMAL, "disconnected by the service")
    return web.Response(status=204)


@routes.delete("/v1/users/{user}/connections")
async def delete_user_connections(request: web.Request) -> web.Response:
    """Revocation: every tab of the user is closed with 4403 (do not reconnect), and a
    "not before now" revocation refuses the user's current credentials at the next handshake."""
    state = request.app[STATE]
    user = request.match_info["user"]
    tabs = list(state.gateway.pool.users.get(UserId(user), {}).values())
    for conn in tabs:
        conn.sink.close(CloseCode.FORBIDDEN, "session revoked")
    if state.bus is not None:  # and on every other node
        state.bus.disconnect_user(user, CloseCode.FORBIDDEN, "session revoked")
    failed = await _revoke(state, user_key(user), time.time())
    if failed is not None:
        return failed
    return web.json_response({"disconnected": len(tabs)})


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
    failed = await _revoke(state, key, not_before)
    if failed is not None:
        return failed
    assert state.revocations is not None
    closed = state.revocations.enforce(state.gateway.pool.connections.values())
    return web.json_response({"revoked": key, "notBefore": not_before, "disconnected": closed})


async def _revoke(state: ApiState, key: str, not_before: float) -> web.Response | None:
    """Record the revocation here and in the store; an error answer when that failed."""
    if state.revocations is None:
        return json_error(503, "revocations are not available on this node")
    try:
        await asyncio.wait_for(state.revocations.revoke(key, not_before), REVOKE_TIMEOUT_S)
    except Exception as exc:  # the store's driver error, or its timeout
        log.warning("revocation %s: the store failed: %r", key, exc)
        return json_error(503, "the revocation store did not answer: held on this node only")
    return None


REVOKE_TIMEOUT_S = 5.0
"""How long a revocation waits for the cluster's store."""


@routes.put("/v1/connections/{id}/channels/{addr:.+}")
async def join_channel(request: web.Request) -> web.Response:
    """Join a connection server-side, through the same pipeline as a client's JOIN.

    Here: ``200`` once joined (the connection got ``JOINED``), or the refusal
    as ``{"error", "code"}`` with its status (:data:`JOIN_STATUS`). On another
    node: ``202``; that node answers a refusal by logging and counting it.
    """
    bus = remote_bus(request)
    if bus is not None:
        if parse_address(request.match_info["addr"]) is None:
            return json_error(400, "bad channel address")
        bus.membership(request.match_info["id"], request.match_info["addr"], join=True)
        return web.json_response({"channel": request.match_info["addr"]}, status=202)
    conn = _connection(request)
    if isinstance(conn, web.Response):
        return conn
    address = parse_address(request.match_info["addr"])
    if address is None:
        return json_error(400, "bad channel address")
    gateway = request.app[STATE].gateway
    outcome: asyncio.Future[Channel | JoinRefused] = asyncio.get_running_loop().create_future()

    def answer(result: Channel | JoinRefused) -> None:
        if not outcome.done():
            outcome.set_result(result)

    gateway.request_join(conn, address, answer, granted=True)  # a service grants by itself
    try:
        result = await asyncio.wait_for(outcome, JOIN_TIMEOUT_S)
    except TimeoutError:
        return _join_error(ErrorCode.UPSTREAM_TIMEOUT, "the join did not complete in time")
    if isinstance(result, JoinRefused):
        return _join_error(result.code, result.message)
    if conn.closed:
        return json_error(404, "no such connection")
    conn.send_action(bi.JOINED, gateway.joined_payload(result))
    return web.json_response({"channel": result.address, "count": result.count})


JOIN_TIMEOUT_S = 10.0
"""An API join waits at most this for its gates (authorize hook, cluster subscription)."""

JOIN_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UPSTREAM_TIMEOUT: 504,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.UPSTREAM_UNAVAILABLE: 503,
}
"""The status of a refused API join, by the code a client's JOIN would get (else 400)."""


def _join_error(code: ErrorCode, message: str) -> web.Response:
    body = {"error": message, "code": code.value}
    return web.json_response(body, status=JOIN_STATUS.get(code, 400))


@routes.delete("/v1/connections/{id}/channels/{addr:.+}")
async def leave_channel(request: web.Request) -> web.Response:
    bus = remote_bus(request)
    if bus is not None:
        bus.membership(request.match_info["id"], request.match_info["addr"], join=False)
        return web.Response(status=202)
    conn = _connection(request)
    if isinstance(conn, web.Response):
        return conn
    address = ChannelAddress(request.match_info["addr"])
    if not request.app[STATE].gateway.leave(conn, address):
        return json_error(404, "the connection is not in that channel")
    conn.send_action(bi.LEFT, {"channel": address})
    return web.Response(status=204)


@routes.get("/v1/channels/{addr:.+}/presence")
async def presence(request: web.Request) -> web.Response:
    """Members of a channel; in a cluster, of every live node (read from the presence store)."""
    address = ChannelAddress(request.match_info["addr"])
    state = request.app[STATE]
    if state.bus is None:
        channel = state.gateway.pool.channel(address)
        members = [] if channel is None else channel.everyone()
    else:
        found = await state.bus.query.presence(address)
        if found is None:
            return json_error(503, "the cluster's presence store did not answer")
        members = found
    body = {"channel": address, "count": len(members), "members": members}
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
