"""Procedure calls: actions without a built-in or relay go to their service.

:class:`Upstream` is the dispatcher's ``upstream`` hook and the gateway's
lifecycle observer. For an inbound action it looks the type up in the
:class:`~wsgate.routing.table.RouteTable` (no route: the dispatcher answers
``NO_ROUTE``), checks the route's roles and ``meta.channel`` membership, and
starts a call to the service and delivers its answer: ``reply``
actions to the sender with ``meta.inReplyTo``, ``publish`` entries to their
targets, failures as ``UPSTREAM_*`` errors without internal detail.
The call goes through the :class:`~wsgate.routing.invoker.Invoker` of the
service's transport (HTTP, gRPC, NATS): one dict probe. There is no task per
call: ``HttpInvoker.start`` writes the request on a pooled connection and
calls back with the outcome; it uses a task of its own only when it must
wait (for a slot or a new connection).

Lifecycle events (``@@wsgate/CONNECTED``, ``DISCONNECTED``, ``JOINED``,
``LEFT``) go, with the connection's context and no reply, to the services
whose routes match those types — the counterpart of AWS's ``$connect`` and
``$disconnect``.

In-flight requests per connection (``max_in_flight``) and per user, all tabs
together (``max_in_flight_per_user``), are capped; past a cap the action is
refused with ``RATE_LIMITED`` and ``retryAfterMs`` rather
than queued, so one client cannot pile up work.

Streams: an action naming a server-streaming method of an invoker that
opens streams (:class:`~wsgate.routing.grpc_stream.Streams`, the gRPC one)
opens a stream instead of a call. It needs ``meta.id`` (unique among the
connection's open streams); each message comes back with ``meta.inReplyTo``
= that id, then ``@@wsgate/END {id, status}``. ``@@wsgate/CANCEL {id}``,
LEAVE of the stream's ``meta.channel`` and disconnecting cancel it. Open
streams per connection (``max_streams``) and per user
(``max_streams_per_user``) are capped (``RATE_LIMITED``); they are not
in-flight calls and do not delay a drain. A stream reads its next message
only once the connection's sink is writable
(:class:`~wsgate.transport.base.FlowSink`), so a slow client pauses it.

Metrics: given ``observe_call`` (the node's metrics, ``[metrics] enabled``),
each answered call is reported once, after its span ended and before its
answer is delivered, as ``(service, outcome, seconds)``: ``outcome`` is
``OK`` or the error code. Without it no clock is read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from wsgate.auth.principal import Principal
from wsgate.core.connection import Connection
from wsgate.core.gateway import Gateway, Pending
from wsgate.delivery import deliver
from wsgate.lifecycle import fields
from wsgate.logs import event
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import Address
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.protocol.envelope import Action, Meta, Outbound, OutMeta, encode
from wsgate.routing.context import InvocationContext
from wsgate.routing.grpc_stream import CANCELLED, OK, Stream, Streams
from wsgate.routing.instances import Service, Transport
from wsgate.routing.invoker import Invoker, Unavailable
from wsgate.routing.results import InvocationResult
from wsgate.routing.table import RouteTable
from wsgate.transport.base import FlowSink
from wsgate.typing import ChannelAddress

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from wsgate.tracing import Tracer

__all__ = ["CallObserver", "Upstream"]

CallObserver = Callable[[str, str, float], None]
"""Told of each answered call: ``(service, outcome, seconds)``; must not raise."""

_Started = tuple[Connection, str | None, str, str, InvocationContext, "Span | None", float]
"""A routed call in flight: its connection, ``meta.id``, action type, service name,
context, span and start time (``perf_counter``; 0.0 without ``observe_call``)."""

_MAX_VERDICTS = 65536
"""Cached authorize verdicts; the oldest goes first past this."""


def _merged(have: tuple[str, ...], extra: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*have, *extra)))


log = logging.getLogger("wsgate.upstream")

_MESSAGES = {
    ErrorCode.UPSTREAM_TIMEOUT: "the service did not answer in time",
    ErrorCode.UPSTREAM_ERROR: "the service failed",
    ErrorCode.UPSTREAM_UNAVAILABLE: "the service is unavailable",
    ErrorCode.INTERNAL: "internal error",
    ErrorCode.FORBIDDEN: "the service refused this action",
    ErrorCode.BAD_REQUEST: "the service refused the request as invalid",
    ErrorCode.RATE_LIMITED: "the service is over its capacity",
    ErrorCode.UNAUTHENTICATED: "the service needs an authenticated caller",
    ErrorCode.NO_ROUTE: "the service does not handle this action",
}


def _failed(
    conn: Connection, context: InvocationContext, action_type: str, service: str, code: ErrorCode
) -> None:
    """The ``upstream_failure`` line of a routed call or hook call that failed (not a refusal)."""
    event(
        "upstream_failure",
        logging.WARNING,
        fields(conn),
        request_id=context.requestId,
        action_type=action_type,
        service=service,
        outcome=code.value,
    )


class _InFlight:
    """Calls (or streams) in flight per connection and per user, each with a cap (0: none).

    Both counts move in one call each way (:meth:`take`, :meth:`give`): one frame per
    routed call and answer where a counter per key took two. Bounded: an entry per
    connection and per user with something in flight, removed when it drops to 0.
    """

    __slots__ = ("conn_cap", "per_conn", "per_user", "user_cap")

    def __init__(self, conn_cap: int, user_cap: int) -> None:
        self.conn_cap = conn_cap
        self.user_cap = user_cap
        self.per_conn: dict[str, int] = {}
        self.per_user: dict[str, int] = {}

    def take(self, cid: str, user: str) -> tuple[int, str] | None:
        """Count one more for ``cid`` and for ``user`` (``""``: anonymous, not counted).

        At a cap nothing is counted, and the cap and what it is per (``"connection"``,
        ``"user"``) are returned; ``None`` when counted.
        """
        n = 0
        conn_cap = self.conn_cap
        if conn_cap:
            n = self.per_conn.get(cid, 0)
            if n >= conn_cap:
                return conn_cap, "connection"
        cap = self.user_cap
        if user and cap:
            m = self.per_user.get(user, 0)
            if m >= cap:
                return cap, "user"
            self.per_user[user] = m + 1
        if conn_cap:
            self.per_conn[cid] = n + 1
        return None

    def give(self, cid: str, user: str) -> None:
        """One taken for ``cid`` and ``user`` ended (a forgotten ``cid`` stays forgotten)."""
        if self.conn_cap:
            counts = self.per_conn
            n = counts.get(cid, 0) - 1
            if n > 0:
                counts[cid] = n
            else:
                counts.pop(cid, None)
        if user and self.user_cap:
            counts = self.per_user
            n = counts.get(user, 0) - 1
            if n > 0:
                counts[user] = n
            else:
                counts.pop(user, None)

    def forget(self, cid: str) -> None:
        """``cid`` is gone: its count goes (its user's comes down as its calls end)."""
        self.per_conn.pop(cid, None)


class _OpenStream:
    """One open stream of a connection: the sink its invoker delivers into."""

    __slots__ = ("channel", "conn", "flow", "id", "stream", "upstream")

    def __init__(
        self, upstream: Upstream, conn: Connection, id_: str, channel: str | None
    ) -> None:
        self.upstream = upstream
        self.conn = conn
        self.id = id_
        self.channel = channel
        self.flow = conn.sink if isinstance(conn.sink, FlowSink) else None
        """The connection's sink, when it can pace a stream."""
        self.stream: Stream | None = None

    def item(self, reply: Outbound) -> None:
        meta = reply.meta or OutMeta()
        meta.inReplyTo = self.id
        reply.meta = meta
        if not self.conn.closed:
            self.conn.sink.send(encode(reply))

    def when_writable(self) -> asyncio.Future[None] | None:
        return None if self.flow is None else self.flow.when_writable()

    def end(self, status: str, message: str | None = None) -> None:
        self.upstream._stream_ended(self)
        if not self.conn.closed:
            payload = bi.EndPayload(self.id, status, message)
            error = status not in (OK, CANCELLED)
            self.conn.send_action(bi.END, payload, in_reply_to=self.id, error=error)


class Upstream:
    """Routes actions to services and tells them of lifecycle events."""

    _gw: Gateway
    """Given by :meth:`attach` (the gateway is built with this hook)."""

    def __init__(
        self,
        table: RouteTable,
        invoker: Invoker,
        *,
        invokers: Mapping[Transport, Invoker] | None = None,
        max_in_flight: int = 16,
        max_in_flight_per_user: int = 64,
        authorize_ttl_s: float = 30.0,
        max_streams: int = 8,
        max_streams_per_user: int = 32,
        tracer: Tracer | None = None,
        observe_call: CallObserver | None = None,
    ) -> None:
        self._table = table
        self._tracer = tracer
        self._observe = observe_call
        """Told of each answered call (``None``: no clock read per call)."""
        """Spans of routed calls (``None``: no span, nothing of OpenTelemetry imported)."""
        self._invokers: dict[Transport, Invoker] = {"http": invoker}
        self._invokers.update(invokers or {})
        """Transport -> its invoker (``invoker`` carries HTTP)."""
        self._streamers: dict[Transport, Streams] = {
            t: inv for t, inv in self._invokers.items() if isinstance(inv, Streams)
        }
        """The invokers that also open streams (gRPC)."""
        self._streams = _InFlight(max_streams, max_streams_per_user)
        self._open: dict[str, dict[str, _OpenStream]] = {}
        """Connection id -> its open streams by id; bounded by the stream caps,
        an entry freed when its stream ends (a connection's when its last does)."""
        self._in_flight = _InFlight(max_in_flight, max_in_flight_per_user)
        """Calls per connection and per user, all tabs together (a cap of 0: none)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._authorize_ttl = authorize_ttl_s
        self._verdicts: dict[tuple[str, str], tuple[ErrorCode | None, float]] = {}
        """(user or connection, channel) → (verdict, expiry): the authorize cache."""
        self._rid_prefix = secrets.token_hex(6) + "-"
        """Request ids: this process's random prefix and a counter (unique, no
        system call per request)."""
        self._rid_counter = itertools.count(1)
        """Formatted ``hex(n)[2:]``, what ``f"{n:x}"`` gives without ``int.__format__``'s
        format-spec machinery (~250 instructions less under callgrind)."""
        self._fixed: dict[str, tuple[Principal, InvocationContext]] = {}
        """Connection id -> (its principal, the context fields that principal fixes), for
        routed calls: built at a connection's first call and again when its principal
        changes (compared by identity: principals are frozen); one entry per open
        connection that made a call, freed by :meth:`disconnected`."""
        self._calls = 0
        """Calls started with ``invoker.start`` and not answered yet (no task each)."""
        self._settled: asyncio.Future[None] | None = None
        """While draining: resolved when ``_calls`` drops to 0."""

    # Inbound actions -----------------------------------------------------------

    def __call__(self, conn: Connection, action: Action) -> bool:
        service = self._table.lookup(action.type)
        if service is None:
            return False
        meta = action.meta
        rid = None if meta is None else meta.id
        if service.roles and not service.allows(conn.principal.roles):  # no frame without roles
            conn.send_error(ErrorCode.FORBIDDEN, f"not allowed to send {action.type}", rid)
            return True
        channel = None if meta is None else meta.channel
        if channel is not None and not conn.in_channel(ChannelAddress(channel)):
            conn.send_error(ErrorCode.NOT_JOINED, f"not in {channel}", rid)
            return True
        pool = service.pool
        streamer = self._streamers.get(pool.transport)
        if streamer is not None and streamer.streams(service, action.type):
            self._open_stream(conn, streamer, service, action, channel, rid)
            return True
        full = self._in_flight.take(conn.id, conn.principal.sub)
        if full is not None:
            message = f"at most {full[0]} requests in flight per {full[1]}"
            conn.send_error(ErrorCode.RATE_LIMITED, message, rid, retry_after_ms=100)
            return True
        self._calls += 1
        # The context: the fields its principal fixes from _fixed (one C-level copy
        # instead of re-reading the principal per call), only the call's own three set.
        p = conn.principal
        fixed = self._fixed.get(conn.id)
        if fixed is None or fixed[0] is not p:
            fixed = self._fixed[conn.id] = (p, self.context(conn, None))
        context = replace(
            fixed[1],
            channel=channel,
            requestId=self._rid_prefix + hex(next(self._rid_counter))[2:],
            receivedAt=time.time(),
        )
        traceparent = None if meta is None else meta.traceparent
        span = None
        if self._tracer is not None:
            span, traceparent = self._tracer.start(
                f"call {service.name}",
                traceparent,
                {
                    "wsgate.action_type": action.type,
                    "wsgate.service": service.name,
                    "wsgate.connection_id": conn.id,
                },
            )
        started = 0.0 if self._observe is None else time.perf_counter()
        # One tuple, not seven bound arguments: functools.partial copies its arguments
        # and the call's onto a small stack of 5, past which it allocates per call.
        call: _Started = (conn, rid, action.type, pool.name, context, span, started)
        done = partial(self._answered, call)
        invoker = self._invokers.get(pool.transport)  # what _invoker does, without its frame
        if invoker is None:
            invoker = self._invoker(service)
        invoker.start(service, action, context, done, traceparent)
        return True

    # Streams ---------------------------------------------------------------

    def _open_stream(
        self,
        conn: Connection,
        streamer: Streams,
        service: Service,
        action: Action,
        channel: str | None,
        rid: str | None,
    ) -> None:
        """Open a stream for ``conn``: its messages, then END, come back with ``inReplyTo``."""
        if rid is None:
            conn.send_error(ErrorCode.BAD_REQUEST, "a stream needs meta.id", None)
            return
        opened = self._open.get(conn.id)
        if opened is not None and rid in opened:
            conn.send_error(ErrorCode.BAD_REQUEST, f"stream {rid} is already open", rid)
            return
        full = self._streams.take(conn.id, conn.principal.sub)
        if full is not None:
            message = f"at most {full[0]} open streams per {full[1]}"
            conn.send_error(ErrorCode.RATE_LIMITED, message, rid, retry_after_ms=1000)
            return
        entry = _OpenStream(self, conn, rid, channel)
        if opened is None:
            opened = self._open[conn.id] = {}
        opened[rid] = entry
        context = self.context(conn, channel)
        entry.stream = streamer.open_stream(service, action, context, entry)

    def _stream_ended(self, entry: _OpenStream) -> None:
        """Free what ``entry`` held (called once, by its ``end``)."""
        conn = entry.conn
        opened = self._open.get(conn.id)
        if opened is not None and opened.get(entry.id) is entry:
            del opened[entry.id]
            if not opened:
                del self._open[conn.id]
        self._streams.give(conn.id, conn.principal.sub)

    def _cancel_streams(self, conn: Connection, channel: str | None = None) -> None:
        """Cancel ``conn``'s streams (only those of ``channel`` when given)."""
        for entry in list(self._open.get(conn.id, {}).values()):
            if (channel is None or entry.channel == channel) and entry.stream is not None:
                entry.stream.cancel()

    def _on_cancel(self, conn: Connection, action: Action) -> None:
        """``@@wsgate/CANCEL {id}``: cancel that open stream (an unknown id is ignored:
        the stream may have just ended, and its END says so)."""
        rid = None if action.meta is None else action.meta.id
        try:
            payload = msgspec.json.decode(action.payload, type=bi.CancelPayload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            conn.send_error(ErrorCode.BAD_REQUEST, "CANCEL takes {id}", rid)
            return
        entry = self._open.get(conn.id, {}).get(payload.id)
        if entry is not None and entry.stream is not None:
            entry.stream.cancel()

    @property
    def fixed_contexts(self) -> int:
        """Connections whose fixed context fields are kept (for tests)."""
        return len(self._fixed)

    @property
    def open_streams(self) -> int:
        """Streams open on this node (for tests and metrics)."""
        return sum(len(s) for s in self._open.values())

    def _invoker(self, service: Service) -> Invoker:
        """The invoker of ``service``'s transport (one dict probe)."""
        invoker = self._invokers.get(service.pool.transport)
        if invoker is None:
            invoker = self._invokers[service.pool.transport] = Unavailable(service.pool.transport)
        return invoker

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def context(self, conn: Connection, channel: str | None) -> InvocationContext:
        """The context of one invocation on behalf of ``conn``."""
        p = conn.principal
        return InvocationContext(
            connectionId=conn.id,
            userId=p.sub,
            sessionId=p.sid,
            auth=p.auth,
            hub=p.org or "public",
            channel=channel,
            orgs=p.all_orgs(),
            teams=p.teams,
            roles=p.roles,
            node=self._gw.node_id,
            requestId=self._rid_prefix + hex(next(self._rid_counter))[2:],
            receivedAt=time.time(),
        )

    def _answered(self, call: _Started, result: InvocationResult | ErrorCode) -> None:
        """The outcome of a call started in :meth:`__call__`: end its span, report it
        to ``observe_call``, write a failure's line, deliver it."""
        conn, rid, action_type, service, context, span, started = call
        # Tested as InvocationResult, not ErrorCode: an exact type passes isinstance at
        # once; a class with a metaclass (an Enum's) has its __instancecheck__ looked up
        # and called (~500 instructions under callgrind) for anything else.
        observe = self._observe
        if span is not None or observe is not None:  # the outcome's name, once
            outcome = "OK" if isinstance(result, InvocationResult) else result.value
            if span is not None and self._tracer is not None:
                self._tracer.end(span, outcome)
            if observe is not None:
                observe(service, outcome, time.perf_counter() - started)
        self._calls -= 1
        if self._calls == 0 and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
        self._in_flight.give(conn.id, conn.principal.sub)
        if not isinstance(result, InvocationResult):
            _failed(conn, context, action_type, service, result)
            if not conn.state.closed:
                conn.send_error(result, _MESSAGES.get(result, "upstream failure"), rid)
            return
        if not conn.state.closed:  # conn.closed without the property's frame
            for reply in result.replies:
                if rid is not None:
                    meta = reply.meta or OutMeta()
                    meta.inReplyTo = rid
                    reply.meta = meta
                conn.sink.send(encode(reply))
        for publish in result.publishes:
            deliver(self._gw, publish)

    # Connect hook --------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        """The connect hook: a service routed for ``@@wsgate/CONNECT`` decides.

        No such route: admitted at once. A 2xx answer admits, with the
        answer's ``claims`` added to the session and its ``reply`` actions
        sent after ``WELCOME``; a 403 refuses (close 4403); a failure or
        timeout closes 1013 (try again later): the hook fails closed.
        """
        service = self._table.lookup(bi.CONNECT)
        if service is None:
            self._gw.admitted(conn)
            return
        self._spawn(self._admit(conn, service))

    def attach(self, gateway: Gateway) -> None:
        """The gateway this hook serves (called from its constructor); handles CANCEL."""
        self._gw = gateway
        gateway.dispatcher.register(bi.CANCEL, self._on_cancel)

    def abandoned(self, conn: Connection) -> None:
        """Closed before the connect hook answered: the late verdict is ignored by the core."""

    async def _admit(self, conn: Connection, service: Service) -> None:
        action = Action(
            type=bi.CONNECT, payload=msgspec.Raw(msgspec.json.encode({"ip": conn.peer}))
        )
        context = self.context(conn, None)
        result = await self._invoker(service).invoke(service, action, context)
        if isinstance(result, ErrorCode):
            if result is ErrorCode.FORBIDDEN:
                self._gw.refused(conn, CloseCode.FORBIDDEN, "refused by the connect hook")
            else:
                _failed(conn, context, bi.CONNECT, service.name, result)
                self._gw.refused(conn, CloseCode.TRY_AGAIN_LATER, "try again later")
            return
        principal = conn.principal
        claims = result.claims
        if claims is not None:
            principal = msgspec.structs.replace(
                principal,
                name=principal.name if claims.name is None else claims.name,
                roles=_merged(principal.roles, claims.roles),
                teams=_merged(principal.teams, claims.teams),
                orgs=_merged(principal.orgs, claims.orgs),
            )
        self._gw.admitted(conn, principal, [encode(reply) for reply in result.replies])
        for publish in result.publishes:
            deliver(self._gw, publish)

    # Authorize hook ------------------------------------------------------------

    def check(
        self,
        conn: Connection,
        address: Address,
        resume: Callable[[ErrorCode | None], None],
    ) -> ErrorCode | Pending | None:
        """The authorize hook: a service routed for ``@@wsgate/JOIN`` allows or denies.

        2xx allows, 403 denies (``FORBIDDEN``); both are cached per user (or
        anonymous connection) and channel for ``authorize_cache_s``. A failed
        call refuses with its ``UPSTREAM_*`` code and is not cached: the hook
        fails closed.
        """
        service = self._table.lookup(bi.JOIN)
        if service is None:
            return None
        key = (conn.principal.sub or conn.id, address.value)
        cached = self._verdicts.get(key)
        if cached is not None:
            verdict, expires = cached
            if expires > time.monotonic():
                return verdict
            del self._verdicts[key]
        self._spawn(self._authorize(conn, service, address, key, resume))
        return Pending.PENDING

    async def _authorize(
        self,
        conn: Connection,
        service: Service,
        address: Address,
        key: tuple[str, str],
        resume: Callable[[ErrorCode | None], None],
    ) -> None:
        payload = msgspec.Raw(msgspec.json.encode({"channel": address.value}))
        action = Action(type=bi.JOIN, payload=payload, meta=Meta(channel=address.value))
        context = self.context(conn, address.value)
        result = await self._invoker(service).invoke(service, action, context)
        verdict = result if isinstance(result, ErrorCode) else None
        if verdict is not None and verdict is not ErrorCode.FORBIDDEN:
            _failed(conn, context, bi.JOIN, service.name, verdict)
        if verdict is None or verdict is ErrorCode.FORBIDDEN:
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[key] = (verdict, time.monotonic() + self._authorize_ttl)
        resume(verdict)

    # Lifecycle events --------------------------------------------------------

    def _event(self, conn: Connection, type_: str, channel: str | None, payload: Any) -> None:
        service = self._table.lookup(type_)
        if service is None:
            return
        action = Action(type=type_, meta=Meta(channel=channel) if channel else None)
        if payload is not None:
            action.payload = msgspec.Raw(msgspec.json.encode(payload))
        self._spawn(self._invoker(service).notify(service, action, self.context(conn, channel)))

    def connected(self, conn: Connection) -> None:
        self._event(conn, bi.CONNECTED, None, {"ip": conn.peer})

    def disconnected(self, conn: Connection) -> None:
        self._fixed.pop(conn.id, None)
        self._in_flight.forget(conn.id)
        self._cancel_streams(conn)
        self._event(conn, bi.DISCONNECTED, None, None)

    def joined(self, conn: Connection, address: ChannelAddress) -> None:
        self._event(conn, bi.JOINED, address, {"channel": address})

    def left(self, conn: Connection, address: ChannelAddress) -> None:
        self._cancel_streams(conn, address)
        self._event(conn, bi.LEFT, address, {"channel": address})

    def delivered(self, conn: Connection, ack: str, offset: int) -> None:
        """``conn`` acknowledged delivery ``ack`` (:mod:`wsgate.core.acks`)."""
        self._event(conn, bi.DELIVERED, None, {"id": ack, "offset": offset})

    # Shutdown ----------------------------------------------------------------

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for in-flight calls; return how many were cut off.

        Calls still running then are cancelled (hooks and events) or left to
        the invoker's close (actions: their connections are dropped and their
        callers told ``UPSTREAM_UNAVAILABLE``).
        """
        pending: set[asyncio.Future[Any]] = set(self._tasks)
        if self._calls:
            self._settled = asyncio.get_running_loop().create_future()
            pending.add(self._settled)
        if not pending:
            return 0
        try:
            _, still = await asyncio.wait(pending, timeout=timeout)
        finally:
            settled, self._settled = self._settled, None
        cut = 0
        for fut in still:
            if fut is settled:
                cut += self._calls
            else:
                fut.cancel()
                cut += 1
        return cut

    @property
    def in_flight(self) -> int:
        return len(self._tasks) + self._calls
