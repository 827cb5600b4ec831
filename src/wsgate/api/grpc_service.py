"""The servicer of ``wsgate.v1.Gateway``: each RPC is one call of :mod:`wsgate.api.ops`.

A method only translates: the protobuf request into the operation's
arguments, its result into the reply, and a :class:`~wsgate.api.ops.Refused`
into a gRPC status (:data:`GRPC_STATUS`; a refused join also carries the
code a client's JOIN would get, as the trailing metadata ``wsgate-code``).
Publish builds the HTTP API's JSON body from the request and hands it to
:func:`wsgate.api.ops.publish`, so both carriers validate targets, types and
payloads in the same msgspec pass; the payload is JSON text and reaches
clients byte for byte.

Imports ``grpc``: import this module only when the gRPC API is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NoReturn

import grpc
import grpc.aio
import msgspec

from wsgate.api import ops
from wsgate.api.app import bearer_ok
from wsgate.api.proto.wsgate.v1 import gateway_pb2 as pb
from wsgate.api.state import ApiState

__all__ = ["CODE_KEY", "GRPC_STATUS", "GatewayServicer"]

GRPC_STATUS: Final = {
    ops.Problem.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ops.Problem.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ops.Problem.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ops.Problem.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ops.Problem.UPSTREAM_ERROR: grpc.StatusCode.UNAVAILABLE,
    ops.Problem.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ops.Problem.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC status of each refusal (docs/api.md "gRPC" has the table)."""

CODE_KEY: Final = "wsgate-code"
"""Trailing metadata naming a refused join's wire error code (``FORBIDDEN``…)."""


async def _abort(context: grpc.aio.ServicerContext, exc: ops.Refused) -> NoReturn:
    trailing = () if exc.code is None else ((CODE_KEY, exc.code.value),)
    await context.abort(GRPC_STATUS[exc.problem], exc.message, trailing_metadata=trailing)
    raise AssertionError("unreachable: abort raises")


def _action(action: pb.Action) -> dict[str, Any]:
    body: dict[str, Any] = {"type": action.type, "error": action.error}
    if action.payload:
        body["payload"] = msgspec.Raw(action.payload.encode())
    return body


def publish_body(request: pb.PublishRequest) -> bytes:
    """``request`` as the JSON body of ``POST /v1/publish`` (validated by the caller):
    ``action`` when it is set, ``actions`` when the batch is not empty (both, or
    neither, are refused there as over HTTP)."""
    kind = request.to.WhichOneof("target")
    body: dict[str, Any] = {"to": {} if kind is None else {kind: getattr(request.to, kind)}}
    if request.HasField("action"):
        body["action"] = _action(request.action)
    if request.actions:
        body["actions"] = [_action(a) for a in request.actions]
    if request.exclude.connection:
        body["exclude"] = {"connection": request.exclude.connection}
    return msgspec.json.encode(body)


class GatewayServicer:
    """``wsgate.v1.Gateway`` over one :class:`ApiState` (register it with
    ``gateway_pb2_grpc.add_GatewayServicer_to_server``)."""

    def __init__(self, state: ApiState, admin_keys: Sequence[str] = ()) -> None:
        self._state = state
        self._admins = [k.encode() for k in admin_keys if k]
        """``[admin] keys``: the only keys a user's ``Disconnect`` takes."""

    async def _need_admin(self, context: grpc.aio.ServicerContext) -> None:
        """Abort with ``PERMISSION_DENIED`` unless the call carries an admin key."""
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                header = value
        if not bearer_ok(header, self._admins):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "an admin key is required")

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishReply:
        try:
            delivered, _ = ops.publish(self._state, publish_body(request))
        except ops.Refused as exc:
            await _abort(context, exc)
        return pb.PublishReply(delivered=delivered)

    async def Disconnect(
        self, request: pb.DisconnectRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisconnectReply:
        try:
            match request.WhichOneof("target"):
                case "connection":
                    here = ops.disconnect(self._state, request.connection)
                    return pb.DisconnectReply(disconnected=int(here), forwarded=not here)
                case "user":
                    await self._need_admin(context)
                    closed = await ops.revoke_user(self._state, request.user)
                    return pb.DisconnectReply(disconnected=closed)
                case _:
                    raise ops.Refused(ops.Problem.BAD_REQUEST, "name a connection or a user")
        except ops.Refused as exc:
            await _abort(context, exc)

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinReply:
        try:
            joined = await ops.join(self._state, request.connection, request.channel)
        except ops.Refused as exc:
            await _abort(context, exc)
        if joined is None:
            return pb.JoinReply(channel=request.channel, forwarded=True)
        return pb.JoinReply(channel=joined.address, count=joined.count)

    async def Leave(
        self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaveReply:
        try:
            here = ops.leave(self._state, request.connection, request.channel)
        except ops.Refused as exc:
            await _abort(context, exc)
        return pb.LeaveReply(forwarded=not here)

    async def Presence(
        self, request: pb.PresenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.PresenceReply:
        try:
            members = await ops.presence(self._state, request.channel)
        except ops.Refused as exc:
            await _abort(context, exc)
        return pb.PresenceReply(
            channel=request.channel,
            count=len(members),
            members=[
                pb.Member(user_id=m.userId, connection_id=m.connectionId, name=m.name)
                for m in members
            ],
        )
