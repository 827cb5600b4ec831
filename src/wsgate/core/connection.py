"""One client connection as the core sees it: identity, membership, outbound sink.

A :class:`Connection` is the :class:`~wsgate.transport.base.Session` the
transport feeds. It holds no socket: it writes through its ``sink``. It is
created by :meth:`Gateway.open <wsgate.core.gateway.Gateway.open>` and dies in
:meth:`on_close`, after which the pool holds no reference to it.

Its :class:`State` changes only in the gateway (``open``, ``admitted``,
``hold``, ``release``, ``close``)::

    ADMITTING --admitted--> OPEN <--release-- HELD
        |                    |  --hold------>  |
        +------ close -------+-----------------+--> CLOSING --> CLOSED

While ``ADMITTING`` (a connect hook decides; ``Gateway.intercept`` sees each
message first, and may take it) or ``HELD`` (a cluster-wide rate
limit answers later) the client's messages wait, in order, in a bounded
``queue`` of ``Gateway.max_pending``; past it they are answered
``RATE_LIMITED`` (with ``inReplyTo``) and dropped.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Any, Protocol

from wsgate.auth.principal import Principal
from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Outbound, OutMeta, encode, reply_id
from wsgate.transport.base import Sink
from wsgate.typing import ChannelAddress, ConnectionId, HubId, UserId

__all__ = ["Connection", "Dispatch", "Intercept", "Owner", "State"]


class Dispatch(Protocol):
    """Handles one inbound text message (:class:`~wsgate.core.dispatch.Dispatcher`)."""

    errors_sent: dict[ErrorCode, int]
    """``@@wsgate/ERROR`` sent by the node's connections, by code (for metrics)."""

    def dispatch(self, conn: Connection, data: bytes) -> None: ...


class Intercept(Protocol):
    """Sees an ``ADMITTING`` connection's messages before they are queued.

    The token admission (:mod:`wsgate.auth.jwt_gate`) takes the first one,
    ``@@wsgate/AUTH``, of a connection that authenticates by message.
    """

    def receive(self, conn: Connection, data: bytes) -> bool:
        """``True`` when it took ``data`` (not queued); ``False`` to queue it as usual."""
        ...


class Owner(Protocol):
    """What a connection uses of the gateway that opened it (:class:`~wsgate.core.gateway.Gateway`).

    ``dispatcher`` gets every message while ``OPEN``; ``intercept`` is offered
    an ``ADMITTING`` connection's messages first; ``max_pending`` bounds
    the ``queue`` otherwise; :meth:`close` is called once, from :meth:`Connection.on_close`,
    with the close code the transport saw.
    """

    @property
    def dispatcher(self) -> Dispatch: ...

    @property
    def max_pending(self) -> int: ...

    @property
    def intercept(self) -> Intercept | None: ...

    def close(self, conn: Connection, code: int) -> None: ...


class State(Enum):
    """Where a connection is in its life; see the module docstring."""

    ADMITTING = "admitting"
    """Handshaken; the connect hook decides. Not in the pool."""
    OPEN = "open"
    """Admitted: in the pool, its messages dispatched at once."""
    HELD = "held"
    """Open, but a cluster-wide rate limit is answering: later messages queue."""
    CLOSING = "closing"
    """The socket is gone; the gateway is undoing what the connection held."""
    CLOSED = "closed"
    """Nothing refers to it any more."""

    def __init__(self, value: str) -> None:
        self.closed = value in ("closing", "closed")
        """``CLOSING`` or ``CLOSED``: what :attr:`Connection.closed` tells, read as
        ``conn.state.closed`` on a hot path (an attribute, not a property's frame)."""


_OPEN = State.OPEN
"""Bound once: ``on_message`` compares against it on every message (the hot path)."""


class Connection:
    """A connected client; also the transport's session for it."""

    __slots__ = (
        "_gateway",
        "_member",
        "channels",
        "connected_at",
        "hubs",
        "id",
        "inbox_at",
        "peer",
        "principal",
        "queue",
        "sink",
        "state",
        "views",
    )

    def __init__(
        self,
        gateway: Owner,
        cid: ConnectionId,
        principal: Principal,
        sink: Sink,
        peer: str,
        hubs: tuple[HubId, ...],
        connected_at: float,
    ) -> None:
        self._gateway = gateway
        self.id = cid
        self.principal = principal
        self.sink = sink
        self.peer = peer
        """The client's IP address."""
        self.hubs = hubs
        """Hubs joined on connect; fixed for the connection's life."""
        self.channels: set[ChannelAddress] | None = None
        """View channels joined (created on first join: idle connections cost less)."""
        self.views: dict[HubId, ChannelAddress] | None = None
        """The current NAVIGATE view per hub."""
        self.state = State.ADMITTING
        """Changed only by the gateway (see the module docstring)."""
        self.queue: deque[bytes] | None = None
        """Messages waiting while ``ADMITTING`` or ``HELD`` (bounded by ``max_pending``)."""
        self.connected_at = connected_at
        """Unix time of the handshake (for the internal API): the sink's ``last_active``
        at open, the same float object (memory per idle connection)."""
        self._member: bi.Member | None = None
        self.inbox_at = -1
        """The inbox offset WELCOME carried, while ``@@wsgate/RESUME`` may still come
        (the first action handled sets it to -1: :data:`wsgate.core.inbox.NO_RESUME`)."""

    @property
    def closed(self) -> bool:
        """The socket is gone (``CLOSING`` or ``CLOSED``): nothing more is sent or joined."""
        return self.state.closed

    @property
    def user_id(self) -> UserId:
        return UserId(self.principal.sub)

    @property
    def member(self) -> bi.Member:
        """This connection as presence shows it (built once)."""
        if self._member is None:
            self._member = bi.Member(self.principal.sub, self.id, self.principal.name)
        return self._member

    def in_channel(self, address: ChannelAddress) -> bool:
        """Tell whether this connection may act in ``address`` (a joined view or hub)."""
        if address in self.hubs:  # type: ignore[comparison-overlap]  # a hub is a channel too
            return True
        return self.channels is not None and address in self.channels

    # Session protocol -------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        if self.state is _OPEN:
            self._gateway.dispatcher.dispatch(self, data)
            return
        queue = self.queue
        if queue is None:  # closing: nothing more is handled
            return
        take = self._gateway.intercept
        if take is not None and self.state is State.ADMITTING and take.receive(self, data):
            return
        if len(queue) < self._gateway.max_pending:
            queue.append(data)
            return
        wait = "wait for WELCOME" if self.state is State.ADMITTING else "wait for the held answer"
        self.send_error(ErrorCode.RATE_LIMITED, wait, reply_id(data), retry_after_ms=100)

    def on_binary(self) -> None:
        self.send_error(ErrorCode.BAD_REQUEST, "binary frames are not accepted; send JSON text")

    def on_close(self, code: int) -> None:
        self._gateway.close(self, code)

    # Sending -----------------------------------------------------------------

    def send_action(
        self, type_: str, payload: Any, *, in_reply_to: str | None = None, error: bool = False
    ) -> None:
        meta = OutMeta(inReplyTo=in_reply_to) if in_reply_to is not None else None
        self.sink.send(encode(Outbound(type_, payload, meta, error)))

    def send_error(
        self,
        code: ErrorCode,
        message: str,
        in_reply_to: str | None = None,
        *,
        retry_after_ms: int | None = None,
    ) -> None:
        """Answer with ``@@wsgate/ERROR``; the connection stays open. Counted by code
        in the dispatcher's ``errors_sent`` (the one place every error is sent)."""
        self._gateway.dispatcher.errors_sent[code] += 1
        payload = bi.ErrorPayload(code.value, message, retryAfterMs=retry_after_ms)
        self.send_action(bi.ERROR, payload, in_reply_to=in_reply_to, error=True)

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.principal.sub!r}>"
