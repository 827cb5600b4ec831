"""The core's facade: opens sessions, keeps membership, answers the transport.

:class:`Gateway` implements :class:`~wsgate.transport.base.ConnectionHandler`.
The transport calls :meth:`Gateway.open` after a handshake; the returned
:class:`~wsgate.core.connection.Connection` is the session it feeds. The
internal API calls :meth:`request_join`, :meth:`leave`, :meth:`disconnect` and
:meth:`Fanout.send <wsgate.core.fanout.Fanout.send>` (``gateway.fanout``).

The collaborators it builds depend on what they use, not on this module: the
fan-out gets the pool, history and bus; a :class:`Connection` sees its gateway
as a :class:`~wsgate.core.connection.Owner`, the built-in handlers as a
:class:`~wsgate.core.builtin.JoinHost`.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Final, Protocol

from wsgate.auth.principal import Principal
from wsgate.backends.base import RecentHistory
from wsgate.core import acks as ackd
from wsgate.core import builtin
from wsgate.core import inbox as inboxes
from wsgate.core.clock import Scheduler
from wsgate.core.connection import Connection, Intercept, State
from wsgate.core.dispatch import Dispatcher, Upstream
from wsgate.core.fanout import Bus, Fanout
from wsgate.core.joins import JoinAnswer, JoinRefused
from wsgate.core.limits import Limiter, SharedCheck, retry_ms
from wsgate.core.namespaces import Namespaces
from wsgate.core.pool import Channel, Pool
from wsgate.core.presence import PresenceBatcher
from wsgate.core.taps import TapRegistry
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import Address, parse_address
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.protocol.envelope import MAX_DEPTH
from wsgate.transport.base import Sink
from wsgate.typing import ChannelAddress, ConnectionId, HubId, NodeId

__all__ = [
    "MAX_SHARED_HUB_LISTS",
    "PENDING",
    "Admission",
    "Attached",
    "AuthorizeHook",
    "Authorizer",
    "ChannelGrants",
    "Gateway",
    "Intercept",
    "JoinAnswer",
    "JoinRefused",
    "Observer",
]


MAX_SHARED_HUB_LISTS: Final = 1024
"""Distinct hub lists :class:`Gateway` keeps to share among connections."""


class Authorizer(Protocol):
    """The channel policy the core asks (see :mod:`wsgate.auth.policy`)."""

    def allows(self, principal: Principal, address: Address) -> bool: ...

    def hubs_for(self, principal: Principal) -> list[HubId]: ...


class ChannelGrants(Protocol):
    """Channel tokens: part of the policy step of a join (see :mod:`wsgate.auth.channel_tokens`)."""

    def required(self, address: Address) -> bool:
        """Whether a client's join of ``address`` needs a channel token."""
        ...

    def check(
        self,
        conn: Connection,
        address: Address,
        token: str | None,
        resume: Callable[[tuple[ErrorCode, str] | int], None],
    ) -> None:
        """Call ``resume`` once: the token's ``exp`` to go on, or ``(code, message)``."""
        ...

    def hold(self, conn: Connection, address: ChannelAddress, exp: int) -> None:
        """The join by a token expiring at ``exp`` completed."""
        ...


class Observer(Protocol):
    """Told of lifecycle events (services route them as ``@@wsgate/CONNECTED`` etc.).

    Called synchronously after the fact; implementations must not block.
    """

    def connected(self, conn: Connection) -> None: ...

    def disconnected(self, conn: Connection) -> None: ...

    def joined(self, conn: Connection, address: ChannelAddress) -> None: ...

    def left(self, conn: Connection, address: ChannelAddress) -> None: ...


class Closes(Protocol):
    """Told of every socket gone, admitted or not, with its close code (the
    lifecycle lines and counts, :mod:`wsgate.lifecycle`)."""

    def closed(self, conn: Connection, code: int, admitted: bool) -> None:
        """``conn``'s socket is gone with ``code`` (1006 when it just went); ``admitted``:
        it had been ``OPEN`` or ``HELD``. Called after :meth:`Gateway.close` undid its state."""
        ...


class Admission(Protocol):
    """A connect hook: decides on a connection before its ``WELCOME``.

    :meth:`admit` starts the decision and returns at once; later it calls
    :meth:`Gateway.admitted` (maybe with extra claims) or
    :meth:`Gateway.refused`. Messages the client sends meanwhile are queued
    (up to ``Gateway.max_pending``) and handled after admission; if the
    connection closes first, :meth:`abandoned` is called and a late verdict is ignored.
    """

    def admit(self, conn: Connection) -> None: ...

    def abandoned(self, conn: Connection) -> None:
        """``conn`` closed before a verdict: free what :meth:`admit` took for it."""
        ...


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


class Attached(Protocol):
    """A collaborator that needs the gateway back (the services hook, the cluster bus)."""

    def attach(self, gateway: Gateway) -> None:
        """Called once, at the end of :class:`Gateway`'s constructor, before any traffic."""
        ...


class Gateway:
    """One node's connections, hubs and channels, and what they may do.

    Every collaborator is given here and fixed for the gateway's life:
    ``upstream`` (actions no built-in or relay handles), ``observers`` (told
    of lifecycle events, in order), ``gates`` (asked in order before a join
    completes, after the channel policy: the authorize hook, the cluster's
    readiness for the channel), ``admission`` (the connect hook, maybe wrapped
    by the cluster's connection cap, maybe wrapped by the token admission),
    ``intercept`` (offered an ``ADMITTING`` connection's messages: AUTH),
    ``bus`` (the fan-out to other nodes), ``ledger`` (the cluster's record
    of acknowledged deliveries, :class:`~wsgate.core.acks.Ledger`),
    ``shared`` (cluster-wide rate limits, set on ``limiter``), ``wall`` (the
    wall clock acknowledged deliveries expire by, shared with other nodes
    through the ledger; a test's manual clock). Those that
    need the gateway back are listed in ``attached`` and get
    :meth:`Attached.attach` last, so construction order is not a rule to remember.
    """

    def __init__(
        self,
        *,
        node_id: NodeId,
        policy: Authorizer,
        scheduler: Scheduler,
        history: RecentHistory,
        relays: list[str],
        inbox: RecentHistory | None = None,
        acks: ackd.AckSettings | None = None,
        acked: Callable[[Connection, str, int], None] | None = None,
        ledger: ackd.Ledger | None = None,
        presence: PresenceBatcher,
        namespaces: Namespaces | None = None,
        limiter: Limiter | None = None,
        upstream: Upstream | None = None,
        observers: Sequence[Observer] = (),
        closes: Closes | None = None,
        gates: Sequence[AuthorizeHook] = (),
        admission: Admission | None = None,
        intercept: Intercept | None = None,
        grants: ChannelGrants | None = None,
        bus: Bus | None = None,
        shared: SharedCheck | None = None,
        attached: Sequence[Attached] = (),
        max_depth: int = MAX_DEPTH,
        heartbeat_ms: int = 25000,
        max_channels: int = 64,
        id_factory: Callable[[], str] = lambda: secrets.token_urlsafe(9),
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.policy = policy
        self.scheduler = scheduler
        self.history = history
        self.inbox = inbox
        """Users' inbox streams (:mod:`wsgate.core.inbox`); ``None``: ``[inbox]`` is off."""
        self.presence = presence
        self.heartbeat_ms = heartbeat_ms
        self.max_channels = max_channels
        """Views one connection may have joined at once (``TOO_LARGE`` past it)."""
        self.namespaces = namespaces or Namespaces()
        """Each channel's options (``[[namespaces]]``), resolved when the pool creates it."""
        self.pool = Pool(self.namespaces)
        self.acks = None if acks is None else ackd.Acks(
            self.pool, scheduler, timeout_s=acks.timeout_s, ttl_s=acks.ttl_s,
            max_entries=acks.max_entries, acked=acked, ledger=ledger, now=wall,
        )
        """Acknowledged deliveries (:mod:`wsgate.core.acks`); ``None``: off."""
        self.fanout = Fanout(self.pool, history, scheduler, bus, inbox, self.acks)
        self.taps = TapRegistry(self.fanout)
        """The live taps' watchers of :attr:`fanout` (``wsgate.api.tap``, the cluster's)."""
        self.limiter = limiter
        if limiter is not None and shared is not None:
            limiter.shared = shared
        self.dispatcher = Dispatcher(
            self.fanout.relay, relays, self.hold, self.release, limiter, max_depth, upstream
        )
        builtin.install(self, self.dispatcher.register)
        inboxes.install(inbox, self.dispatcher.register)
        ackd.install(self.acks, self.dispatcher.register)
        self._new_id = id_factory
        self._hub_lists: dict[tuple[HubId, ...], tuple[HubId, ...]] = {}
        """Each hub list connections hold, once (tabs of a user, users of one org share
        theirs); at most :data:`MAX_SHARED_HUB_LISTS`, the oldest forgotten first (a
        forgotten list stays with its connections; the next equal one is stored anew)."""
        self.observers: tuple[Observer, ...] = tuple(observers)
        """Told of lifecycle events: services (:mod:`wsgate.upstream`), the cluster."""
        self.closes = closes
        """Told of every socket gone with its close code (``None``: nobody)."""
        self.admission = admission
        """The connect hook (``None``: admitted at once)."""
        self.intercept = intercept
        """Offered each message of an ``ADMITTING`` connection before it is queued."""
        self.gates: tuple[AuthorizeHook, ...] = tuple(gates)
        """Asked in order before any join completes (see :meth:`request_join`)."""
        self.grants = grants
        """Channel tokens, asked with the policy (``None``: no channel needs one)."""
        self.max_pending = 32
        """Messages queued per connection while ``ADMITTING`` or ``HELD``; past it
        they are answered ``RATE_LIMITED`` and dropped."""
        for part in attached:
            part.attach(self)

    # Sessions: every state transition of a connection is here ----------------

    def open(self, sink: Sink, principal: Principal, peer: str) -> Connection:
        """Take a handshaken connection: admit it now, or once the connect hook says so."""
        cid = ConnectionId(f"{self.node_id}.{self._new_id()}")
        # One string per address, not per connection (CPython frees an interned
        # string with its last reference).
        conn = Connection(self, cid, principal, sink, sys.intern(peer), (), sink.last_active)
        refusal = None if self.limiter is None else self.limiter.connect(principal, peer, self.pool)
        if refusal is not None:
            self._too_many(conn, refusal)
            conn.state = State.CLOSED  # never admitted: nothing to undo on close
            return conn
        if self.admission is None:
            self.admitted(conn)
        else:
            conn.queue = deque()
            self.admission.admit(conn)
        return conn

    def _shared_hubs(self, hubs: tuple[HubId, ...]) -> tuple[HubId, ...]:
        """The stored tuple equal to ``hubs`` (memory per connection: one per hub list)."""
        lists = self._hub_lists
        known = lists.get(hubs)
        if known is not None:
            return known
        if len(lists) >= MAX_SHARED_HUB_LISTS:
            del lists[next(iter(lists))]
        lists[hubs] = hubs
        return hubs

    def identified(self, conn: Connection, principal: Principal) -> bool:
        """An ``ADMITTING`` connection's principal became known after :meth:`open`
        (a verified connection token): apply the per-user connection cap :meth:`open`
        could not, then take ``principal``.

        ``False`` when refused (``RATE_LIMITED``, then close 4429; the principal is
        left as it was) or no longer ``ADMITTING``; the caller then stops.
        """
        if conn.state is not State.ADMITTING:
            return False
        refusal = None if self.limiter is None else self.limiter.connect_user(principal, self.pool)
        if refusal is not None:
            conn.queue = None  # its messages are dropped; close() finishes the job
            self._too_many(conn, refusal)
            return False
        conn.principal = principal
        return True

    def renewed(self, conn: Connection, principal: Principal) -> None:
        """An open connection's credential was refreshed (``@@wsgate/REFRESH``):
        take ``principal``, then re-check every view it is in with the policy.

        A view the new claims no longer allow is left (presence, observers, as
        :meth:`leave`) and the client gets ``LEFT {channel, reason}``. The
        caller checked that the user and the hubs are unchanged; hubs stay.
        Ignored when the connection is not ``OPEN`` or ``HELD``.
        """
        if conn.state is not State.OPEN and conn.state is not State.HELD:
            return
        conn.principal = principal
        for address in sorted(conn.channels or ()):
            parsed = parse_address(address)
            if parsed is not None and self.policy.allows(principal, parsed):
                continue
            if self.leave(conn, address):
                reason = "the refreshed session no longer allows this channel"
                conn.send_action(bi.LEFT, {"channel": address, "reason": reason})

    def _too_many(self, conn: Connection, refusal: tuple[str, float]) -> None:
        reason, wait = refusal
        conn.send_error(ErrorCode.RATE_LIMITED, reason, retry_after_ms=retry_ms(wait))
        conn.sink.close(CloseCode.TOO_MANY, reason)

    def admitted(
        self,
        conn: Connection,
        principal: Principal | None = None,
        greeting: Iterable[bytes] = (),
    ) -> None:
        """``ADMITTING`` → ``OPEN``: hubs, ``WELCOME``, ``greeting``, then its queued messages.

        ``principal`` replaces the connection's claims (a connect hook added some).
        Ignored unless the connection is still ``ADMITTING`` (it may have closed).
        """
        if conn.state is not State.ADMITTING:
            return
        if principal is not None:
            conn.principal = principal
        conn.hubs = self._shared_hubs(tuple(self.policy.hubs_for(conn.principal)))
        self.pool.add(conn)
        conn.state = State.OPEN
        inbox_at = None
        if self.inbox is not None and not conn.principal.anonymous:
            stream = inboxes.stream_of(conn.principal.sub)
            if len(self.pool.users[conn.user_id]) == 1:
                self.inbox.retain(stream, True)
            # An inbox that never held anything is at 0, "before it existed": an empty
            # stream is freed with the last tab, and a RESUME from 0 recovers its next life.
            # A top of 0 is that already (a new user's, in a storm: no replay built).
            top = self.inbox.top(stream)
            if top:
                empty = self.inbox.since(stream, 0)
                if empty.recovered and not empty.entries:
                    top = 0
            conn.inbox_at = inbox_at = top
        welcome = bi.WelcomePayload(
            connectionId=conn.id,
            userId=conn.principal.sub or None,
            node=self.node_id,
            hubs=list(conn.hubs),
            heartbeatMs=self.heartbeat_ms,
            inbox=inbox_at,
        )
        conn.send_action(bi.WELCOME, welcome)
        for data in greeting:
            conn.sink.send(data)
        if self.acks is not None:
            self.acks.connected(conn)
        for observer in self.observers:
            observer.connected(conn)
        self._drain(conn)

    def refused(self, conn: Connection, code: int, reason: str) -> None:
        """The connect hook refused ``conn``: close it; it never joined anything."""
        if conn.state is State.ADMITTING:
            conn.queue = None  # its messages are dropped; close() finishes the job
            conn.sink.close(code, reason)

    def hold(self, conn: Connection) -> None:
        """``OPEN`` → ``HELD``: later messages queue until :meth:`release`."""
        if conn.state is State.OPEN:
            conn.state = State.HELD
            if conn.queue is None:
                conn.queue = deque()

    def release(self, conn: Connection) -> None:
        """``HELD`` → ``OPEN``, then the queued messages in order (one may hold again)."""
        if conn.state is State.HELD:
            conn.state = State.OPEN
            self._drain(conn)

    def _drain(self, conn: Connection) -> None:
        """Dispatch queued messages while the connection stays ``OPEN``.

        A message that starts a hold stops the drain; the rest wait for its
        :meth:`release`. At most ``max_pending`` iterations: nothing is queued meanwhile.
        """
        queue = conn.queue
        while queue and conn.state is State.OPEN:
            self.dispatcher.dispatch(conn, queue.popleft())
        if conn.state is State.OPEN:
            conn.queue = None

    def close(self, conn: Connection, code: int) -> None:
        """The connection is gone (``code``: how its socket closed): undo exactly what
        its state acquired, tell the others.

        ``ADMITTING``: the admission is told (a cluster count is released);
        ``OPEN``/``HELD``: pool, channels, presence and observers (the cluster
        releases its connection count there); always the limiter's strikes.
        A late answer (admission, hold, authorize hook) then finds it closed.
        Last, ``closes`` hears of it, whatever the state (a connection refused at
        :meth:`open` is ``CLOSED`` already).
        """
        state = conn.state
        if state is not State.CLOSING and state is not State.CLOSED:
            self._undo(conn, state)
        if self.closes is not None:
            self.closes.closed(conn, code, state is State.OPEN or state is State.HELD)

    def _undo(self, conn: Connection, state: State) -> None:
        """:meth:`close` of a connection ``ADMITTING``, ``OPEN`` or ``HELD`` (``state``)."""
        conn.state = State.CLOSING
        conn.queue = None
        if self.limiter is not None:
            self.limiter.forget(conn)
        if state is State.ADMITTING:
            if self.admission is not None:
                self.admission.abandoned(conn)
        else:
            for channel in self.pool.remove(conn):
                self._after_leave(channel, conn)
            self.release_inbox(conn)
            if self.acks is not None:
                self.acks.disconnected(conn)
            for observer in self.observers:
                observer.disconnected(conn)
        conn.state = State.CLOSED

    def release_inbox(self, conn: Connection) -> None:
        """``conn``'s user has no tab here (any more): their inbox stream is freed
        ``ttl_s`` from now (or at once when empty). Called by :meth:`close` and by an
        admission that loaded the stream for a connection that then closed."""
        inbox = self.inbox
        if inbox is None or conn.principal.anonymous or conn.user_id in self.pool.users:
            return
        inbox.retain(inboxes.stream_of(conn.principal.sub), False)

    def disconnect(self, cid: ConnectionId, code: int = CloseCode.NORMAL, reason: str = "") -> bool:
        """Close a local connection by id; ``False`` when it is not here."""
        conn = self.pool.connections.get(cid)
        if conn is None:
            return False
        conn.sink.close(code, reason)
        return True

    # Membership: the one join pipeline ------------------------------------------

    def request_join(
        self,
        conn: Connection,
        address: Address,
        answer: JoinAnswer,
        before_pool: Callable[[], object] | None = None,
        *,
        token: str | None = None,
        granted: bool = False,
    ) -> None:
        """Join the view ``address``: policy (with its channel token), each gate, the pool.

        Every entry point uses this: a client's JOIN and NAVIGATE, the internal
        API's join, a join asked by another node. ``answer`` gets the channel,
        or a :class:`JoinRefused` with the code (``BAD_REQUEST`` for a bare hub
        or a bad address, ``FORBIDDEN`` from the policy, a gate's code,
        ``TOO_LARGE`` past ``max_channels`` or the channel's ``max_members``
        (its namespace's), ``NOT_JOINED`` when the connection
        closed while a gate decided) — now or later, exactly once. A client's
        answer must check ``conn.closed`` before sending. ``before_pool`` runs once every
        gate allowed, just before the pool (NAVIGATE leaves its old view there).

        A channel that needs a channel token (``grants``) is joined only with a
        ``token`` that ``grants`` accepts (refused ``FORBIDDEN`` or
        ``UNAUTHENTICATED`` otherwise), unless ``granted``: the internal API
        asked, a service granting the channel itself.
        """
        if address.view is None:
            answer(JoinRefused(
                ErrorCode.BAD_REQUEST, "hubs are joined on connect; join a view <hub>:<view>"
            ))
            return
        if not self.policy.allows(conn.principal, address):
            answer(JoinRefused(ErrorCode.FORBIDDEN, f"not allowed to join {address.value}"))
            return
        grants = self.grants
        if granted or grants is None or not grants.required(address):
            self._gate(conn, address, 0, answer, before_pool)
            return
        self._grant(grants, conn, address, token, answer, before_pool)

    def _grant(
        self,
        grants: ChannelGrants,
        conn: Connection,
        address: Address,
        token: str | None,
        answer: JoinAnswer,
        before_pool: Callable[[], object] | None,
    ) -> None:
        """The channel token step of :meth:`request_join`; on success the gates,
        and once joined ``grants.hold`` (the membership lasts as the token)."""

        def resume(result: tuple[ErrorCode, str] | int) -> None:
            if conn.closed:
                answer(JoinRefused(ErrorCode.NOT_JOINED, "the connection closed"))
                return
            if isinstance(result, tuple):
                answer(JoinRefused(*result))
                return
            exp = result

            def joined(outcome: Channel | JoinRefused) -> None:
                if not isinstance(outcome, JoinRefused):
                    grants.hold(conn, outcome.address, exp)
                answer(outcome)

            self._gate(conn, address, 0, joined, before_pool)

        grants.check(conn, address, token, resume)

    def _gate(
        self,
        conn: Connection,
        address: Address,
        index: int,
        answer: JoinAnswer,
        before_pool: Callable[[], object] | None,
    ) -> None:
        """Ask gate ``index``; on allow go to the next, after the last join the pool."""
        gates = self.gates
        if index == len(gates):
            if before_pool is not None:
                before_pool()
            answer(self._join_pool(conn, address))
            return

        def resume(refusal: ErrorCode | None) -> None:
            if conn.closed:  # gone while a gate decided: nothing joins, the caller still hears
                answer(JoinRefused(ErrorCode.NOT_JOINED, "the connection closed"))
                return
            if refusal is None:
                self._gate(conn, address, index + 1, answer, before_pool)
            else:
                answer(JoinRefused(refusal, f"not allowed to join {address.value}"))

        verdict = gates[index].check(conn, address, resume)
        if not isinstance(verdict, Pending):
            resume(verdict)

    def _join_pool(self, conn: Connection, address: Address) -> Channel | JoinRefused:
        channels = conn.channels
        new = address.value not in (channels or ())
        full = channels is not None and len(channels) >= self.max_channels
        if full and new:
            return JoinRefused(
                ErrorCode.TOO_LARGE, f"at most {self.max_channels} channels per connection"
            )
        existing = self.pool.channel(address.value)
        if existing is not None and new:
            cap = existing.options.max_members
            if cap and existing.count >= cap:
                return JoinRefused(ErrorCode.TOO_LARGE, f"{address.value} has {cap} members")
        channel, added = self.pool.join(conn, address.hub, address.value)
        if added:
            if len(channel.members) == 1:
                self.history.retain(channel.address, True)
            self.presence.joined(channel, conn)
            for observer in self.observers:
                observer.joined(conn, channel.address)
        return channel

    def leave(self, conn: Connection, address: ChannelAddress) -> bool:
        """Leave ``address``; ``False`` when the connection was not in it."""
        channel = self.pool.leave(conn, address)
        if channel is None:
            return False
        self._after_leave(channel, conn)
        return True

    def _after_leave(self, channel: Channel, conn: Connection) -> None:
        self.presence.left(channel, conn)
        conflation = self.fanout.conflation
        conflation.left(channel, conn.id)
        if not channel.members:
            self.presence.discard(channel)
            conflation.discard(channel)
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
