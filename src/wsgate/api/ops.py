"""The internal API's operations, whatever carries them (HTTP ``/v1``, gRPC ``wsgate.v1``).

Each function is the one path of its operation: the aiohttp handlers of
:mod:`wsgate.api.v1` and the gRPC servicer of :mod:`wsgate.api.grpc_service`
both call it and only translate its result or its :class:`Refused` into
their answer (an HTTP status, a gRPC status code). A connection that lives
on another node is reached over the cluster bus (the operation is then
*forwarded*: it happens on that node, after this call returns).

No function here touches a socket itself; :func:`join` and :func:`presence`
await the core's join pipeline and the cluster's presence store, each
bounded in time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Final

import msgspec

from wsgate.api.state import ApiState, bus_for
from wsgate.auth.revocations import user_key
from wsgate.core.acks import AckState
from wsgate.core.connection import Connection
from wsgate.core.gateway import JoinRefused
from wsgate.core.pool import Channel
from wsgate.delivery import deliver_batch
from wsgate.exceptions import BackendError
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import parse_address
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.routing.results import MAX_ACTIONS, PublishBatch
from wsgate.typing import ChannelAddress, ConnectionId, UserId

__all__ = [
    "JOIN_TIMEOUT_S",
    "MAX_BATCH",
    "MAX_PUBLISH_BYTES",
    "Problem",
    "Refused",
    "channel",
    "connection",
    "decode_publish",
    "delivery_state",
    "disconnect",
    "disconnect_user",
    "join",
    "leave",
    "presence",
    "publish",
    "revoke",
    "revoke_user",
]

JOIN_TIMEOUT_S = 10.0
"""An API join waits at most this for its gates (authorize hook, cluster subscription)."""


class Problem(enum.Enum):
    """Why an operation was refused, independent of the protocol that carried it."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    UPSTREAM_ERROR = "upstream_error"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"


_BY_CODE = {
    ErrorCode.BAD_REQUEST: Problem.BAD_REQUEST,
    ErrorCode.FORBIDDEN: Problem.FORBIDDEN,
    ErrorCode.TOO_LARGE: Problem.TOO_LARGE,
    ErrorCode.UPSTREAM_TIMEOUT: Problem.TIMEOUT,
    ErrorCode.UPSTREAM_ERROR: Problem.UPSTREAM_ERROR,
    ErrorCode.UPSTREAM_UNAVAILABLE: Problem.UNAVAILABLE,
}
"""A refused join's problem, by the code a client's JOIN would get (else BAD_REQUEST)."""


class Refused(Exception):
    """An operation refused: ``problem``, a ``message`` fit for the calling service
    (never internal details) and, for a refused join, the wire ``code`` a client's
    JOIN would have got."""

    def __init__(self, problem: Problem, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.code = code


MAX_BATCH: Final = MAX_ACTIONS
"""Most actions one publish's ``"actions"`` may carry (as many as a service's answer)."""
MAX_PUBLISH_BYTES: Final = 1 << 20
"""Largest publish body, whatever carried it (the HTTP API reads no more anyway)."""

_publish = msgspec.json.Decoder(PublishBatch)


def decode_publish(data: bytes) -> PublishBatch:
    """A publish body (``{"to", "action" | "actions", "exclude"?}``, JSON), validated
    in one pass.

    Raises :class:`Refused`: ``TOO_LARGE`` for a body over
    :data:`MAX_PUBLISH_BYTES` or a batch over :data:`MAX_BATCH` actions,
    ``BAD_REQUEST`` naming what else is wrong (neither or both of ``action``
    and ``actions``, an empty batch, a bad target or action).
    """
    if len(data) > MAX_PUBLISH_BYTES:
        raise Refused(Problem.TOO_LARGE, f"a publish body is at most {MAX_PUBLISH_BYTES} bytes")
    try:
        body = _publish.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Refused(Problem.BAD_REQUEST, f"bad publish: {exc}") from None
    if body.actions is not None and len(body.actions) > MAX_BATCH:
        raise Refused(Problem.TOO_LARGE, f"a batch has at most {MAX_BATCH} actions")
    return body


def publish(
    state: ApiState, data: bytes, traceparent: str | None = None
) -> tuple[int, str | None]:
    """Validate the publish body ``data`` and deliver it; return the local deliveries
    and, for ``ack: true``, the delivery id (:func:`delivery_state` reads it).

    A batch is delivered in order, each action encoded once and each member's
    share written in one go (:func:`wsgate.delivery.deliver_batch`); nothing
    of a refused body is delivered. In a cluster the core also hands it to
    the bus, which reaches the other nodes' members (they are not counted
    here). With ``[tracing]`` on, the publish is a span, a child of
    ``traceparent`` when it is valid. Raises
    :class:`Refused`: ``BAD_REQUEST`` (a bad body; ``ack`` for a channel, a
    hub or a batch), ``UNAVAILABLE`` for ``ack`` where acknowledged delivery is off
    (``[inbox] ack_timeout_ms = 0``; to a user, ``[inbox] enabled = false``) or this
    node's table is full.
    """
    body = decode_publish(data)
    ack = _reserve(state, body) if body.ack else None
    tracer = state.tracer
    if tracer is None:
        return deliver_batch(state.gateway, body, ack), ack
    batch = body.batch
    attributes: dict[str, str | int] = {
        "wsgate.action_type": batch[0].type,
        "wsgate.target": body.to.kind,
    }
    if body.actions is not None:
        attributes["wsgate.actions"] = len(batch)
    span, _ = tracer.start("publish", traceparent, attributes)
    try:
        delivered = deliver_batch(state.gateway, body, ack)
    except BaseException:
        tracer.end(span, ErrorCode.INTERNAL.value)
        raise
    span.set_attribute("wsgate.delivered", delivered)
    tracer.end(span, "OK")
    return delivered, ack


def _reserve(state: ApiState, body: PublishBatch) -> str:
    acks = state.gateway.acks
    if acks is None:
        raise Refused(
            Problem.UNAVAILABLE, "acknowledged delivery is not available on this gateway"
        )
    if body.to.user is not None and state.gateway.inbox is None:
        raise Refused(Problem.UNAVAILABLE, "acknowledged delivery to a user needs [inbox]")
    ack = acks.reserve()
    if ack is None:
        raise Refused(Problem.UNAVAILABLE, "too many unacknowledged deliveries; retry later")
    return ack


_RANK: Final = {AckState.PENDING: 0, AckState.DELIVERED: 1, AckState.ACKED: 2,
                AckState.EXPIRED: 2}


async def delivery_state(state: ApiState, ack: str) -> str:
    """``pending``, ``delivered``, ``acked`` or ``expired`` of delivery ``ack``: in a
    cluster the further of the ledger's word (any node answers) and this node's
    table's (its write may still be on its way); when the backend fails, this
    node's table. Raises :class:`Refused` (``NOT_FOUND``: unknown, or freed ``ttl``
    after it finished)."""
    acks = state.gateway.acks
    found = None if acks is None else acks.state(ack)
    shared = None if state.bus is None else state.bus.acks
    if shared is not None and found not in (AckState.ACKED, AckState.EXPIRED):
        try:
            remote = await shared.state(ack)
            if remote is not None and (found is None or _RANK[remote] > _RANK[found]):
                found = remote  # the further of the two (a write may be on its way)
        except BackendError:
            _log.warning("deliveries: the ledger could not be read", exc_info=True)
    if found is None:
        raise Refused(Problem.NOT_FOUND, "no such delivery")
    return found.value


def connection(state: ApiState, cid: str) -> Connection:
    """Connection ``cid`` of this node. Raises :class:`Refused` (``NOT_FOUND``)."""
    conn = state.gateway.pool.connections.get(ConnectionId(cid))
    if conn is None:
        raise Refused(Problem.NOT_FOUND, "no such connection on this node")
    return conn


def disconnect(state: ApiState, cid: str) -> bool:
    """Close connection ``cid`` with 1000: ``True`` when closed here, ``False`` when
    forwarded to the node its id names. Raises :class:`Refused` (``NOT_FOUND``)."""
    bus = bus_for(state, cid)
    if bus is not None:
        bus.disconnect(cid, CloseCode.NORMAL, "disconnected by the service")
        return False
    connection(state, cid).sink.close(CloseCode.NORMAL, "disconnected by the service")
    return True


def disconnect_user(state: ApiState, user: str) -> int:
    """Revocation: close every tab of ``user`` with 4403, here and on every other node;
    return how many were closed here."""
    tabs = list(state.gateway.pool.users.get(UserId(user), {}).values())
    for conn in tabs:
        conn.sink.close(CloseCode.FORBIDDEN, "session revoked")
    if state.bus is not None:
        state.bus.disconnect_user(user, CloseCode.FORBIDDEN, "session revoked")
    return len(tabs)


REVOKE_TIMEOUT_S = 5.0
"""How long a revocation waits for the cluster's store."""
_log = logging.getLogger("wsgate.api")


async def revoke(state: ApiState, key: str, not_before: float) -> None:
    """Record a revocation here at once and in the cluster's store.

    Raises :class:`Refused` (``UNAVAILABLE``) when the node has no store, or
    the store did not answer within :data:`REVOKE_TIMEOUT_S` (this node holds it
    then; the others do not).
    """
    if state.revocations is None:
        raise Refused(Problem.UNAVAILABLE, "revocations are not available on this node")
    try:
        await asyncio.wait_for(state.revocations.revoke(key, not_before), REVOKE_TIMEOUT_S)
    except Exception as exc:  # the store's driver error, or its timeout
        _log.warning("revocation %s: the store failed: %r", key, exc)
        raise Refused(
            Problem.UNAVAILABLE, "the revocation store did not answer: held on this node only"
        ) from None


async def revoke_user(state: ApiState, user: str) -> int:
    """:func:`disconnect_user`, then a "not before now" revocation of ``user`` (the
    same credentials are refused at the next handshake on any node). Returns how
    many tabs closed here; raises as :func:`revoke` (the tabs are closed already)."""
    closed = disconnect_user(state, user)
    await revoke(state, user_key(user), time.time())
    return closed


async def join(state: ApiState, cid: str, channel: str) -> Channel | None:
    """Join ``cid`` to ``channel`` through the gateway's one join pipeline.

    Here: the joined :class:`Channel` once the connection got ``JOINED``. On
    another node: ``None`` (forwarded; that node logs and counts a refusal).
    Raises :class:`Refused`: ``BAD_REQUEST`` for a bad address, ``NOT_FOUND``,
    the pipeline's refusal (with its ``code``), or ``TIMEOUT`` after
    :data:`JOIN_TIMEOUT_S`.
    """
    bus = bus_for(state, cid)
    if bus is not None:
        if parse_address(channel) is None:
            raise Refused(Problem.BAD_REQUEST, "bad channel address")
        bus.membership(cid, channel, join=True)
        return None
    conn = connection(state, cid)
    address = parse_address(channel)
    if address is None:
        raise Refused(Problem.BAD_REQUEST, "bad channel address")
    gateway = state.gateway
    outcome: asyncio.Future[Channel | JoinRefused] = asyncio.get_running_loop().create_future()

    def answer(result: Channel | JoinRefused) -> None:
        if not outcome.done():
            outcome.set_result(result)

    gateway.request_join(conn, address, answer, granted=True)  # a service grants by itself
    try:
        result = await asyncio.wait_for(outcome, JOIN_TIMEOUT_S)
    except TimeoutError:
        raise Refused(
            Problem.TIMEOUT, "the join did not complete in time", ErrorCode.UPSTREAM_TIMEOUT
        ) from None
    if isinstance(result, JoinRefused):
        problem = _BY_CODE.get(result.code, Problem.BAD_REQUEST)
        raise Refused(problem, result.message, result.code)
    if conn.closed:
        raise Refused(Problem.NOT_FOUND, "no such connection")
    conn.send_action(bi.JOINED, gateway.joined_payload(result))
    return result


def leave(state: ApiState, cid: str, channel: str) -> bool:
    """Take ``cid`` out of ``channel`` (it gets ``LEFT``): ``True`` when done here,
    ``False`` when forwarded. Raises :class:`Refused` (``NOT_FOUND``: no such
    connection, or not a member)."""
    bus = bus_for(state, cid)
    if bus is not None:
        bus.membership(cid, channel, join=False)
        return False
    conn = connection(state, cid)
    address = ChannelAddress(channel)
    if not state.gateway.leave(conn, address):
        raise Refused(Problem.NOT_FOUND, "the connection is not in that channel")
    conn.send_action(bi.LEFT, {"channel": address})
    return True


async def presence(state: ApiState, channel: str) -> list[bi.Member]:
    """Members of ``channel``; in a cluster, of every live node (the presence store).

    Raises :class:`Refused` (``UNAVAILABLE``) when the store did not answer in time.
    """
    address = ChannelAddress(channel)
    if state.bus is None:
        found = state.gateway.pool.channel(address)
        return [] if found is None else found.everyone()
    members = await state.bus.query.presence(address)
    if members is None:
        raise Refused(Problem.UNAVAILABLE, "the cluster's presence store did not answer")
    return members


async def channel(state: ApiState, address: str) -> dict[str, object]:
    """A view channel's effective options (its namespace's) and member count.

    ``{channel, count, options}``; the count is :func:`presence`'s (every
    node's members in a cluster), the options are resolved as the pool does
    when it creates the channel, so they hold for a channel nobody is in yet.
    Raises :class:`Refused` (``BAD_REQUEST``) for a bad address or a bare hub,
    or :func:`presence`'s refusal.
    """
    parsed = parse_address(address)
    if parsed is None or parsed.view is None:
        raise Refused(Problem.BAD_REQUEST, "expected a view channel <hub>:<view>")
    here = state.gateway.pool.channel(parsed.value)
    options = state.gateway.namespaces.resolve(parsed.value) if here is None else here.options
    count = len(await presence(state, parsed.value))
    return {"channel": parsed.value, "count": count, "options": options.describe()}
