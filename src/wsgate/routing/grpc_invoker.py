"""Invoking gRPC services: one unary call per action, transcoded from JSON (issue 10).

A gRPC route's service is one target (pool ``grpc:<target>``, instance URL
the target itself); :class:`GrpcInvoker` keeps per target one
:class:`~wsgate.routing.grpc_channel.Channel` (the gateway's own HTTP/2
client) for the calls, unary and streaming alike, one ``grpc.aio`` channel
for discovery's reflection (rare calls; :meth:`GrpcInvoker.channel`), and
the methods discovery bound to it (:meth:`GrpcInvoker.bind`: action type ->
:class:`~wsgate.routing.grpc_transcode.Method`). grpcio's client cost
140-250 µs of CPU per unary call, ours a fraction of it (bench/README.md,
``bench/grpc_clients.py``).

The request carries the context as metadata: ``wsgate-connection-id``,
``wsgate-user`` (when signed in), ``wsgate-organization`` (the hub),
``wsgate-channel`` (when ``meta.channel`` is set), ``wsgate-request-id``
and ``traceparent`` (passed through or generated). A value that is not
printable ASCII goes as ``<key>-bin`` (its UTF-8 bytes). The first four
and ``grpc-timeout`` are the same for every call of a connection in a
channel: their encoded block is kept per (connection, user, hub, channel,
deadline), at most
:data:`MAX_CONTEXT_BLOCKS` of them (the map is emptied when full).

The answer is one reply action: type :attr:`Method.reply_type`, payload the
response's JSON form; the Upstream sets ``meta.inReplyTo``. Failures are
:data:`STATUS` rows (a table, no server text reaches the client; the
status and details are logged once per service and code until the next
success). A payload that does not fit the request message is answered by
the gateway: ``@@wsgate/ERROR`` ``BAD_REQUEST`` naming the field, and the
service is not called.

Bounds: at most ``max_concurrency`` calls per target in flight (the pool's
slots); a call waits up to ``timeout_ms`` for a slot (then
``UPSTREAM_UNAVAILABLE``) and gets ``timeout_ms`` as its gRPC deadline; a
request or answer message over ``max_message`` bytes ends the call
``RESOURCE_EXHAUSTED``.
Each started call is one task of the invoker's, bounded by the Upstream's
in-flight caps and freed when the call ends; :meth:`GrpcInvoker.aclose`
cancels them (their ``done`` gets ``UPSTREAM_UNAVAILABLE``) and closes every
channel. ``grpc`` is imported when the first reflection channel is made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Outbound
from wsgate.routing.context import InvocationContext
from wsgate.routing.grpc_channel import Channel, GrpcCallError, UnaryCall
from wsgate.routing.grpc_h2 import metadata_block, metadata_name, timeout_header
from wsgate.routing.grpc_stream import Stream, StreamSink
from wsgate.routing.grpc_transcode import Method, Refused
from wsgate.routing.instances import Instance, Service
from wsgate.routing.invoker import Done
from wsgate.routing.outcomes import Outcomes
from wsgate.routing.results import InvocationResult
from wsgate.routing.trace import traceparent_bytes

__all__ = ["CHANNEL_OPTIONS", "DOWN", "STATUS", "GrpcInvoker", "GrpcTarget"]

log = logging.getLogger(__name__)

STATUS: Final[Mapping[str, ErrorCode]] = {
    "INVALID_ARGUMENT": ErrorCode.BAD_REQUEST,
    "FAILED_PRECONDITION": ErrorCode.BAD_REQUEST,
    "OUT_OF_RANGE": ErrorCode.BAD_REQUEST,
    "PERMISSION_DENIED": ErrorCode.FORBIDDEN,
    "UNAUTHENTICATED": ErrorCode.UNAUTHENTICATED,
    "UNAVAILABLE": ErrorCode.UPSTREAM_UNAVAILABLE,
    "DEADLINE_EXCEEDED": ErrorCode.UPSTREAM_TIMEOUT,
    "RESOURCE_EXHAUSTED": ErrorCode.RATE_LIMITED,
    "UNIMPLEMENTED": ErrorCode.NO_ROUTE,
    "NOT_FOUND": ErrorCode.UPSTREAM_ERROR,
}
"""``grpc.StatusCode`` name -> what the client is told; any other status is ``UPSTREAM_ERROR``.

``UNIMPLEMENTED`` is ``NO_ROUTE``: the target no longer has the method (the
next discovery round drops the route). ``NOT_FOUND`` is the service's answer
about its own data, so it is ``UPSTREAM_ERROR`` like any other failure."""

DOWN: Final = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
"""Statuses that take the target out for its back-off (``mark_failed``)."""

CHANNEL_OPTIONS: Final = (
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
"""Reflection's channel: no proxy from the environment; a restarted target is back within 2 s."""

MAX_CONTEXT_BLOCKS: Final = 4096
"""Contexts whose metadata block the invoker keeps encoded (about 100 bytes each)."""

MAX_MESSAGE: Final = 4 << 20
"""Default bound on a request or answer message, grpcio's default receive limit."""


@dataclass(frozen=True)
class GrpcTarget:
    """How to reach one target: ``host:port``, with TLS if ``tls``.

    ``roots``: PEM roots to check the server with (the ``ca_file``'s bytes,
    read once by whoever builds this); ``None``: the system's.
    """

    target: str
    tls: bool = False
    roots: bytes | None = None
    max_message: int = MAX_MESSAGE


@dataclass
class _Target:
    settings: GrpcTarget
    channel: Any = None
    """Its ``grpc.aio.Channel`` for reflection, made on first use."""
    calls: Channel | None = None
    """The channel the calls go on, made on first use."""
    methods: dict[str, Method] = field(default_factory=dict)
    """Action type -> method; replaced whole by :meth:`GrpcInvoker.bind`."""

    def caller(self) -> Channel:
        if self.calls is None:
            s = self.settings
            self.calls = Channel(s.target, tls=s.tls, roots=s.roots, max_message=s.max_message)
        return self.calls


class GrpcInvoker:
    """Calls gRPC targets; keeps the :class:`~wsgate.routing.invoker.Invoker` contract."""

    def __init__(self, targets: Iterable[GrpcTarget]) -> None:
        self._targets = {t.target: _Target(t) for t in targets}
        """Configured targets only: the set is fixed for the invoker's life."""
        self._tasks: set[asyncio.Task[None]] = set()
        """Started calls; each removes itself when done."""
        self._outcomes = Outcomes(log, "target")
        self._streams: set[Stream] = set()
        """Open streams; bounded by the Upstream's stream caps, each removed at its end."""
        self._context_blocks: dict[tuple[str, str, str, str | None, float | None], bytes] = {}
        """(connection, user, hub, channel, deadline) -> their metadata (with
        ``grpc-timeout``); see :data:`MAX_CONTEXT_BLOCKS`."""
        self._streaming: frozenset[str] = frozenset()
        """The action types some target serves as a server-streaming method (see :meth:`bind`)."""
        self._closed = False

    # Discovery's side --------------------------------------------------------

    def channel(self, target: str) -> Any:
        """The ``grpc.aio`` channel to ``target``, for reflection (made now if need be)."""
        import grpc

        state = self._targets[target]
        if state.channel is None:
            settings = state.settings
            if settings.tls:
                creds = grpc.ssl_channel_credentials(root_certificates=settings.roots)
                state.channel = grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)
            else:
                state.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return state.channel

    def bind(self, target: str, methods: Mapping[str, Method]) -> None:
        """Make ``methods`` (action type -> method) what ``target`` serves, replacing the last."""
        self._targets[target].methods = dict(methods)
        self._streaming = frozenset(
            name
            for state in self._targets.values()
            for name, method in state.methods.items()
            if method.server_streaming
        )

    def methods(self, target: str) -> Mapping[str, Method]:
        return self._targets[target].methods

    # The Invoker seam ----------------------------------------------------------

    def start(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None = None,
    ) -> None:
        """Start a call; ``done`` gets the outcome, once, later (never from within ``start``).

        The common case — a free slot, a bound method, a connection that
        can take a stream — costs no task and no future: the request is
        written and ``done`` runs from the connection's callbacks. Otherwise
        a task of the invoker's makes the call (waiting, connecting, errors).
        """
        pool = service.pool
        if not self._closed and pool.slots.try_acquire():
            try:
                if self._start_now(service, action, context, done, traceparent):
                    return
            except Refused:
                pass  # the task path answers it
            except Exception:
                log.exception("service %s: gRPC invocation failed unexpectedly", service.name)
            pool.slots.release()
        self._spawn(self._call_then(service, action, context, traceparent, done))

    def _start_now(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        done: Done,
        traceparent: str | None,
    ) -> bool:
        """The fast path of :meth:`start`, holding a slot; ``False``: nothing was started
        (:class:`Refused`: nor will be, the task path answers it)."""
        pool = service.pool
        inst = pool.pick()
        state = self._targets.get(inst.url) if inst is not None else None
        if inst is None or state is None or state.calls is None:
            return False
        method = state.methods.get(action.type)
        if method is None or not method.unary:
            return False
        request = _serialize(method.encode(_payload(action.payload)))
        timeout_s = pool.timeout_ms / 1000
        metadata = self._metadata(context, traceparent_bytes(traceparent), timeout_s)
        call = _Answer(self, service, inst, method, done)
        return state.calls.start_unary(method.path, request, metadata, timeout_s, call)

    async def invoke(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> InvocationResult | ErrorCode:
        """Call and wait for the outcome. Never raises (a bug is ``INTERNAL``, logged)."""
        try:
            return await self._call(service, action, context, traceparent)
        except Exception:
            log.exception("service %s: gRPC invocation failed unexpectedly", service.name)
            return ErrorCode.INTERNAL

    async def notify(
        self,
        service: Service,
        event_action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None = None,
    ) -> None:
        """Send a lifecycle event as a call and ignore the answer."""
        await self.invoke(service, event_action, context, traceparent)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Cancel the calls in flight (``UPSTREAM_UNAVAILABLE``), close every channel."""
        self._closed = True
        for stream in list(self._streams):
            stream.cancel(ErrorCode.UPSTREAM_UNAVAILABLE.value)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for state in self._targets.values():
            channel, state.channel = state.channel, None
            calls, state.calls = state.calls, None
            if calls is not None:
                await calls.aclose()
            if channel is not None:
                await channel.close()

    # Streams -----------------------------------------------------------------

    def streams(self, service: Service, action_type: str) -> bool:
        """Whether ``action_type`` names a server-streaming method of ``service``'s target."""
        if action_type not in self._streaming:  # the common case (asked per call): unary
            return False
        for inst in service.pool.instances:  # a gRPC service has its one target
            state = self._targets.get(inst.url)
            method = None if state is None else state.methods.get(action_type)
            return method is not None and method.server_streaming
        return False

    def open_stream(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        sink: StreamSink,
        traceparent: str | None = None,
    ) -> Stream:
        """Open a server-streaming call; see :mod:`.grpc_stream` for what ``sink`` gets.

        The stream has no deadline (it lasts until the service ends it or it
        is cancelled); ``timeout_ms`` bounds only the wait for a slot.
        """
        stream = Stream(sink)
        task = self._spawn(self._stream(stream, service, action, context, traceparent))
        stream.task = task
        self._streams.add(stream)
        task.add_done_callback(stream.finished)
        task.add_done_callback(lambda _: self._streams.discard(stream))
        return stream

    async def _stream(
        self,
        stream: Stream,
        service: Service,
        action: Action,
        context: InvocationContext,
        traceparent: str | None,
    ) -> None:
        pool = service.pool
        if self._closed:
            stream.finish(ErrorCode.UPSTREAM_UNAVAILABLE.value)
            return
        try:
            await asyncio.wait_for(pool.slots.acquire(), pool.timeout_ms / 1000)
        except TimeoutError:
            code = self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "concurrency cap full")
            stream.finish(code.value)
            return
        try:
            inst = pool.pick()
            state = self._targets.get(inst.url) if inst is not None else None
            method = None if state is None else state.methods.get(action.type)
            if inst is None or state is None or method is None or not method.server_streaming:
                stream.finish(ErrorCode.NO_ROUTE.value)
                return
            try:
                request = method.encode(_payload(action.payload))
            except Refused as exc:
                stream.finish(ErrorCode.BAD_REQUEST.value, str(exc))
                return
            metadata = self._metadata(context, traceparent_bytes(traceparent))
            call = state.caller().stream(method.path, _serialize(request), metadata)
            target: Instance = inst
            streamed: Method = method

            def reply(message: bytes) -> Outbound:
                answer = streamed.response.FromString(message)
                return Outbound(type=streamed.reply_type, payload=streamed.decode(answer))

            def failed(exc: Exception) -> str:
                if isinstance(exc, GrpcCallError):
                    status = exc.status
                    code = STATUS.get(status, ErrorCode.UPSTREAM_ERROR)
                    reason = f"{streamed.name}: {status}: {exc.details}"
                    return self._fail(service, target, code, reason, down=status in DOWN).value
                log.error("service %s: stream failed", service.name, exc_info=exc)
                return ErrorCode.INTERNAL.value

            await stream.pump(call, reply, failed)
        finally:
            pool.slots.release()

    # Internals ---------------------------------------------------------------

    def _metadata(
        self, context: InvocationContext, traceparent: bytes, timeout_s: float | None = None
    ) -> bytes:
        """The context as a metadata block (see the module docstring), with ``grpc-timeout``
        unless ``timeout_s`` is ``None`` (a stream)."""
        key = (context.connectionId, context.userId, context.hub, context.channel, timeout_s)
        fixed = self._context_blocks.get(key)
        if fixed is None:
            if len(self._context_blocks) >= MAX_CONTEXT_BLOCKS:
                self._context_blocks.clear()
            pairs = _pairs(zip(_CONTEXT_KEYS, key[:4], strict=True))
            fixed = metadata_block(pairs)
            if timeout_s is not None:
                fixed += timeout_header(timeout_s)
            self._context_blocks[key] = fixed
        rid = context.requestId
        # A traceparent from traceparent_bytes: 55 bytes of [0-9a-f-] (W3C §3.2).
        tail = (_TRACEPARENT, _LENGTHS[len(traceparent)], traceparent)
        if rid and len(rid) < 127 and rid.isascii() and rid.isprintable():  # the common case
            # One join: no block built piece by piece (a new bytes per piece).
            return b"".join((fixed, _REQUEST_ID, _LENGTHS[len(rid)], rid.encode(), *tail))
        return b"".join((fixed, metadata_block(_pairs((("wsgate-request-id", rid),))), *tail))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call_then(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
        done: Done,
    ) -> None:
        result: InvocationResult | ErrorCode = ErrorCode.UPSTREAM_UNAVAILABLE
        try:
            result = await self._call(service, action, context, traceparent)
        except asyncio.CancelledError:
            pass  # aclose: the caller hears UPSTREAM_UNAVAILABLE
        except Exception:
            log.exception("service %s: gRPC invocation failed unexpectedly", service.name)
            result = ErrorCode.INTERNAL
        try:
            done(result)
        except Exception:
            log.exception("invocation callback failed")

    async def _call(
        self,
        service: Service,
        action: Action | Outbound,
        context: InvocationContext,
        traceparent: str | None,
    ) -> InvocationResult | ErrorCode:
        if self._closed:
            return ErrorCode.UPSTREAM_UNAVAILABLE
        pool = service.pool
        timeout_s = pool.timeout_ms / 1000
        try:
            await asyncio.wait_for(pool.slots.acquire(), timeout_s)
        except TimeoutError:
            return self._fail(service, None, ErrorCode.UPSTREAM_UNAVAILABLE, "concurrency cap full")
        try:
            inst = pool.pick()
            state = self._targets.get(inst.url) if inst is not None else None
            if inst is None or state is None:
                return self._fail(service, inst, ErrorCode.UPSTREAM_UNAVAILABLE, "no target")
            method = state.methods.get(action.type)
            if method is None or not method.unary:
                return self._fail(service, inst, ErrorCode.NO_ROUTE, f"no unary {action.type}")
            try:
                request = method.encode(_payload(action.payload))
            except Refused as exc:
                return _refusal(str(exc))
            metadata = self._metadata(context, traceparent_bytes(traceparent), timeout_s)
            channel = state.caller()
            return await self._send(service, inst, method, channel, request, metadata, timeout_s)
        finally:
            pool.slots.release()

    def _outcome(
        self,
        service: Service,
        inst: Instance,
        method: Method,
        answer: bytes | None,
        error: GrpcCallError | None,
    ) -> InvocationResult | ErrorCode:
        """A finished call's result: the reply, or its status's error code (logged)."""
        if answer is not None:
            try:
                response = method.response.FromString(answer)
            except Exception:  # protobuf's DecodeError: what grpcio calls INTERNAL
                error = GrpcCallError("INTERNAL", "answer does not parse")
            else:
                self._outcomes.answered(service, inst)
                reply = Outbound(type=method.reply_type, payload=method.decode(response))
                return InvocationResult(replies=[reply])
        if self._closed:
            return ErrorCode.UPSTREAM_UNAVAILABLE
        status = error.status if error is not None else "UNKNOWN"
        code = STATUS.get(status, ErrorCode.UPSTREAM_ERROR)
        details = error.details if error is not None else ""
        reason = f"{method.name}: {status}: {details}"
        return self._fail(service, inst, code, reason, down=status in DOWN)

    async def _send(
        self,
        service: Service,
        inst: Instance,
        method: Method,
        channel: Channel,
        request: Any,
        metadata: bytes,
        timeout_s: float,
    ) -> InvocationResult | ErrorCode:
        try:
            answer = await channel.unary(method.path, _serialize(request), metadata, timeout_s)
        except GrpcCallError as exc:
            return self._outcome(service, inst, method, None, exc)
        return self._outcome(service, inst, method, answer, None)

    def _fail(
        self,
        service: Service,
        inst: Instance | None,
        code: ErrorCode,
        reason: str,
        *,
        down: bool = False,
    ) -> ErrorCode:
        """Log (once per service and code) and return ``code``; take ``inst`` out if ``down``."""
        return self._outcomes.failed(service, inst, code, reason, down=down)


class _Answer(UnaryCall):
    """A call started by :meth:`GrpcInvoker.start`'s fast path: holds its slot until done.

    """

    __slots__ = ("done", "inst", "invoker", "method", "service")

    def __init__(
        self, invoker: GrpcInvoker, service: Service, inst: Instance, method: Method, done: Done
    ) -> None:
        super().__init__()
        self.invoker = invoker
        self.service = service
        self.inst = inst
        self.method = method
        self.done = done

    def finish(self, answer: bytes | None, error: GrpcCallError | None) -> None:
        self.service.pool.slots.release()
        try:
            result = self.invoker._outcome(self.service, self.inst, self.method, answer, error)
        except Exception:
            log.exception("service %s: gRPC answer failed unexpectedly", self.service.name)
            result = ErrorCode.INTERNAL
        try:
            self.done(result)
        except Exception:
            log.exception("invocation callback failed")


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _payload(payload: Any) -> bytes | None:
    """The action's payload as JSON bytes (``None``: no payload)."""
    if payload is None:
        return None
    if isinstance(payload, msgspec.Raw):
        return bytes(payload)
    return msgspec.json.encode(payload)


def _refusal(message: str) -> InvocationResult:
    """The gateway's own ``BAD_REQUEST``, as the one reply (the service was not called)."""
    error = Outbound(
        type=bi.ERROR,
        payload=bi.ErrorPayload(ErrorCode.BAD_REQUEST.value, message),
        error=True,
    )
    return InvocationResult(replies=[error])


_CONTEXT_KEYS: Final = (
    "wsgate-connection-id", "wsgate-user", "wsgate-organization", "wsgate-channel",
)  # fmt: skip
"""The metadata keys of an :class:`InvocationContext`'s connection, user, hub and channel."""
_REQUEST_ID: Final = metadata_name("wsgate-request-id")
_LENGTHS: Final = tuple(bytes((n,)) for n in range(127))
"""A literal's one-byte value length (RFC 7541 §5.1, under 127), made once."""
_TRACEPARENT: Final = metadata_name("traceparent")


def _pairs(
    pairs: Iterable[tuple[str, str | None]],
) -> tuple[tuple[str, str | bytes], ...]:
    """Metadata pairs: empty values left out, a value not printable ASCII as ``<key>-bin``."""
    out: list[tuple[str, str | bytes]] = []
    for key, value in pairs:
        if not value:
            continue
        if value.isascii() and value.isprintable():
            out.append((key, value))
        else:
            out.append((f"{key}-bin", value.encode()))
    return tuple(out)
