"""``/@connections/{id}``: the AWS API Gateway management API, compatible.

Code written against AWS (``boto3.client("apigatewaymanagementapi",
endpoint_url=...)``: ``post_to_connection``, ``get_connection``,
``delete_connection``) works unchanged: requests are SigV4-signed with a
credential from ``[api.aws] credentials``, for ``[api.aws] region`` and the
service ``execute-api``; a connection that is gone answers
410 ``GoneException``, a bad signature 403 ``ForbiddenException``.

In a cluster the connection's own node answers ``get_connection`` (within
the cluster query's timeout; 504 when it stays silent) and carries out
``delete_connection``, whichever node was asked.

``post_to_connection``'s ``Data`` is sent to the client as one text message,
byte for byte (it must be UTF-8); with wsgate clients it should be an action.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from wsgate.api.sigv4 import verify_sigv4
from wsgate.api.state import BEARER_OK, STATE, remote_bus
from wsgate.cluster.query import ANSWER_TIMEOUT_S, Found
from wsgate.cluster.views import describe
from wsgate.core.connection import Connection
from wsgate.protocol.codes import CloseCode
from wsgate.typing import ConnectionId

__all__ = ["routes"]

routes = web.RouteTableDef()

MAX_DATA = 128 * 1024
"""AWS's limit for ``post_to_connection`` data."""


def _aws_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=status, headers={"x-amzn-ErrorType": kind}
    )


async def _authorized(request: web.Request) -> web.Response | bytes:
    body = await request.read()
    if request.get(BEARER_OK):  # a bearer key of [api] keys, checked by the middleware
        return body
    reason = verify_sigv4(
        method=request.method,
        raw_path=request.raw_path,
        headers=request.headers,
        body=body,
        secrets=request.app[STATE].aws_secrets,
        region=request.app[STATE].aws_region,
    )
    if reason is not None:
        return _aws_error(403, "ForbiddenException", reason)
    return body


def _target(request: web.Request) -> Connection | web.Response:
    cid = ConnectionId(request.match_info["id"])
    conn = request.app[STATE].gateway.pool.connections.get(cid)
    if conn is None or conn.closed:
        return _aws_error(410, "GoneException", "connection is gone")
    return conn


class _Described(msgspec.Struct):
    """What AWS's answers need of ``describe()`` (cluster/views.py), wherever it was made."""

    ip: str
    connectedAt: float
    userAgent: str = ""
    lastActiveAt: float = 0.0


async def _authorized_target(request: web.Request) -> _Described | web.Response:
    """A signed request's connection, described by its own node, or the AWS error to answer."""
    body = await _authorized(request)
    if isinstance(body, web.Response):
        return body
    bus = remote_bus(request)
    if bus is None:
        conn = _target(request)
        if isinstance(conn, web.Response):
            return conn
        return msgspec.convert(describe(conn), type=_Described)
    found, data = await bus.query.connection(ConnectionId(request.match_info["id"]))
    if found is Found.FOUND:
        return msgspec.json.decode(data, type=_Described)
    if found is Found.GONE:
        return _aws_error(410, "GoneException", "connection is gone")
    message = f"its node did not answer within {ANSWER_TIMEOUT_S:g} s"
    return _aws_error(504, "InternalServerErrorException", message)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@routes.post("/@connections/{id}")
async def post_to_connection(request: web.Request) -> web.Response:
    body = await _authorized(request)
    if isinstance(body, web.Response):
        return body
    if len(body) > MAX_DATA:
        return _aws_error(413, "PayloadTooLargeException", "data is larger than 128 KB")
    try:
        body.decode()
    except UnicodeDecodeError:
        return _aws_error(400, "BadRequestException", "data must be UTF-8 text")
    state = request.app[STATE]
    cid = request.match_info["id"]
    if state.bus is not None and cid.partition(".")[0] != state.gateway.node_id:
        state.bus.raw_to_connection(cid, body)  # its node delivers it, or drops it if gone
        return web.Response(status=200)
    conn = _target(request)
    if isinstance(conn, web.Response):
        return conn
    conn.sink.send(body)
    return web.Response(status=200)


@routes.get("/@connections/{id}")
async def get_connection(request: web.Request) -> web.Response:
    conn = await _authorized_target(request)
    if isinstance(conn, web.Response):
        return conn
    return web.json_response(
        {
            "connectedAt": _iso(conn.connectedAt),
            "identity": {"sourceIp": conn.ip, "userAgent": conn.userAgent},
            "lastActiveAt": _iso(max(conn.lastActiveAt, conn.connectedAt)),
        }
    )


@routes.delete("/@connections/{id}")
async def delete_connection(request: web.Request) -> web.Response:
    found = await _authorized_target(request)
    if isinstance(found, web.Response):
        return found
    bus = remote_bus(request)
    if bus is not None:  # its node closes it (asked above: it is there)
        bus.disconnect(request.match_info["id"], CloseCode.NORMAL, "deleted")
        return web.Response(status=204)
    conn = _target(request)
    if isinstance(conn, web.Response):
        return conn
    conn.sink.close(CloseCode.NORMAL, "deleted")
    return web.Response(status=204)
