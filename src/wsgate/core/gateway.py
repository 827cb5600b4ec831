"""The core's facade: opens sessions, keeps membership, answers the transport.

:class:`Gateway` implements :class:`~wsgate.transport.base.ConnectionHandler`.
The transport calls :meth:`Gateway.open` after a handshake; the returned
:class:`~wsgate.core.connection.Connection` is the session it feeds. The
internal API calls :meth:`join`, :meth:`leave`, :meth:`disconnect` and the
:class:`~wsgate.core.fanout.Fanout` publish methods.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Final, Protocol

from wsgate.auth.principal import Principal
from wsgate.backends.base import RecentHistory
from wsgate.core import builtin
from wsgate.core.clock import Scheduler
from wsgate.core.connection import Connection
from wsgate.core.dispatch import Dispatcher
from wsgate.core.fanout import Fanout
from wsgate.core.limits import Limiter, retry_ms
from wsgate.core.pool import Channel, Pool
from wsgate.core.presence import PresenceBatcher
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import Address
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.protocol.envelope import MAX_DEPTH
from wsgate.transport.base import Sink
from wsgate.typing import ChannelAddress, ConnectionId, HubId, NodeId

__all__ = [
    "PENDING",
    "Admission",
    "AuthorizeHook",
    "Authorizer",
    "Gateway",
    "JoinRefused",
    "Observer",
]


class Authorizer(Protocol):
    """The channel policy the core asks (see :mod:`wsgate.auth.policy`)."""

    def allows(self, principal: Principal, address: Address) -> bool: ...

    def hubs_for(self, principal: Principal) -> list[HubId]: ...


class Observer(Protocol):
    """Told of lifecycle events (services route them as ``@@wsgate/CONNECTED`` etc.).

    Called synchronously after the fact; implementations must not block.
    """

    def connected(self, conn: Connection) -> None: ...

    def disconnected(self, conn: Connection) -> None: ...

    def joined(self, conn: Connection, address: ChannelAddress) -> None: ...

    def left(self, conn: Connection, address: ChannelAddress) -> None: ...


class Admission(Protocol):
    """A connect hook: decides on a connection before its ``WELCOME``.

    :meth:`admit` starts the decision and returns at once; later it calls
    :meth:`Gateway.admitted` (maybe with extra claims) or
    :meth:`Gateway.refused`. Messages the client sends meanwhile are queued
    (up to ``Gateway.max_pending``) and handled after admission.
    """

    def admit(self, conn: Connection) -> None: ...


class Pending(Enum):
    """:meth:`AuthorizeHook.check` has no answer yet; it will call ``resume``."""

    PENDING = "pending"


PENDING: Final = Pending.PENDING


class AuthorizeHook(Protocol):
    """A service's say on joins, after the static policy allowed them."""

    def check(
        self, conn: Connection, address: Address, resume: Callable[[ErrorCode | None], None]
    ) -> ErrorCode | Pending | None:
        """``None`` to allow now, an error code to refuse now, or :data:`PENDING`
        and later ``resume(None)`` (allow) or ``resume(code)`` (refuse)."""
        ...


class JoinRefused(Exception):
    """Internal signal from :meth:`Gateway.join`; carries the client-facing code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Gateway:
    """One node's connections, hubs and channels, and what they may do."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        policy: Authorizer,
        scheduler: Scheduler,
        history: RecentHistory,
        relays: list[str],
        presence: PresenceBatcher,
        limiter: Limiter | None = None,
        max_depth: int = MAX_DEPTH,
        heartbeat_ms: int = 25000,
        max_channels: int = 64,
        id_factory: Callable[[], str] = lambda: secrets.token_urlsafe(9),
    ) -> None:
        self.node_id = node_id
        self.policy = policy
        self.scheduler = scheduler
        self.history = history
        self.presence = presence
        self.heartbeat_ms = heartbeat_ms
        self.max_channels = max_channels
        """Views one connection may have joined at once (``TOO_LARGE`` past it)."""
        self.pool = Pool()
        self.fanout = Fanout(self)
        self.limiter = limiter
        self.dispatcher = Dispatcher(self.fanout.relay, relays, limiter, max_depth)
        builtin.install(self)
        self._new_id = id_factory
        self.observers: list[Observer] = []
        """Told of lifecycle events: services (:mod:`wsgate.upstream`), the cluster."""
        self.admission: Admission | None = None
        """Set by the node when a connect hook is routed."""
        self.gates: list[AuthorizeHook] = []
        """Asked in order before a JOIN or NAVIGATE completes (after the channel policy):
        the authorize hook, the cluster's readiness for the channel."""
        self.max_pending = 32
        """Messages queued per connection while its admission runs."""

    # Sessions -----------------------------------------------------------------

    def open(self, sink: Sink, principal: Principal, peer: str) -> Connection:
        """Take a handshaken connection: admit it now, or once the connect hook says so."""
        cid = ConnectionId(f"{self.node_id}.{self._new_id()}")
        conn = Connection(self, cid, principal, sink, peer, ())
        refusal = None if self.limiter is None else self.limiter.connect(principal, peer, self.pool)
        if refusal is not None:
            reason, wait = refusal
            conn.send_error(ErrorCode.RATE_LIMITED, reason, retry_after_ms=retry_ms(wait))
            sink.close(CloseCode.TOO_MANY, reason)
            conn.closed = True  # never admitted: nothing to undo on close
            return conn
        if self.admission is None:
            self.admitted(conn)
        else:
            conn.pending = []
            self.admission.admit(conn)
        return conn

    def admitted(
        self,
        conn: Connection,
        principal: Principal | None = None,
        greeting: Iterable[bytes] = (),
    ) -> None:
        """Admit ``conn``: hubs, ``WELCOME``, then ``greeting``, then its queued messages.

        ``principal`` replaces the connection's claims (a connect hook added some).
        """
        if conn.closed:
            return
        if principal is not None:
            conn.principal = principal
        conn.hubs = tuple(self.policy.hubs_for(conn.principal))
        self.pool.add(conn)
        welcome = bi.WelcomePayload(
            connectionId=conn.id,
            userId=conn.principal.sub or None,
            node=self.node_id,
            hubs=list(conn.hubs),
            heartbeatMs=self.heartbeat_ms,
        )
        conn.send_action(bi.WELCOME, welcome)
        for data in greeting:
            conn.sink.send(data)
        for observer in self.observers:
            observer.connected(conn)
        queued, conn.pending = conn.pending, None
        for data in queued or ():
            self.dispatcher.dispatch(conn, data)

    def refused(self, conn: Connection, code: int, reason: str) -> None:
        """The connect hook refused ``conn``: close it; it never joined anything."""
        conn.pending = None
        if not conn.closed:
            conn.sink.close(code, reason)

    def close(self, conn: Connection) -> None:
        """The connection is gone: take it out of everything, tell the others."""
        if conn.closed:
            return
        conn.closed = True
        if self.limiter is not None:
            self.limiter.forget(conn)
        if conn.pending is not None:  # closed before admission: never in the pool
            conn.pending = None
            return
        for channel in self.pool.remove(conn):
            self._after_leave(channel, conn)
        for observer in self.observers:
            observer.disconnected(conn)

    def disconnect(self, cid: ConnectionId, code: int = CloseCode.NORMAL, reason: str = "") -> bool:
        """Close a local connection by id; ``False`` when it is not here."""
        conn = self.pool.connections.get(cid)
        if conn is None:
            return False
        conn.sink.close(code, reason)
        return True

    # Membership ---------------------------------------------------------------

    def join(self, conn: Connection, address: Address) -> tuple[Channel, bool]:
        """Join the view ``address``; raise :class:`JoinRefused` when not allowed."""
        if address.view is None:
            raise JoinRefused(
                ErrorCode.BAD_REQUEST, "hubs are joined on connect; join a view <hub>:<view>"
            )
        if not self.policy.allows(conn.principal, address):
            raise JoinRefused(ErrorCode.FORBIDDEN, f"not allowed to join {address.value}")
        channels = conn.channels
        full = channels is not None and len(channels) >= self.max_channels
        if full and address.value not in (channels or ()):
            raise JoinRefused(
                ErrorCode.TOO_LARGE, f"at most {self.max_channels} channels per connection"
            )
        channel, added = self.pool.join(conn, address.hub, address.value)
        if added:
            if len(channel.members) == 1:
                self.history.retain(channel.address, True)
            self.presence.joined(channel, conn)
            for observer in self.observers:
                observer.joined(conn, channel.address)
        return channel, added

    def leave(self, conn: Connection, address: ChannelAddress) -> bool:
        """Leave ``address``; ``False`` when the connection was not in it."""
        channel = self.pool.leave(conn, address)
        if channel is None:
            return False
        self._after_leave(channel, conn)
        return True

    def _after_leave(self, channel: Channel, conn: Connection) -> None:
        self.presence.left(channel, conn)
        if not channel.members:
            self.presence.discard(channel)
            self.history.retain(channel.address, False)
        for observer in self.observers:
            observer.left(conn, channel.address)

    def joined_payload(self, channel: Channel) -> bi.JoinedPayload:
        return bi.JoinedPayload(
            channel=channel.address,
            count=channel.count,
            offset=self.history.top(channel.address),
            members=self.presence.snapshot(channel),
        )
