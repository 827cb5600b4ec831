"""Acknowledged delivery: a receipt for a publish to a connection or a user.

A publish with ``ack: true`` gets a delivery id (the API returns it) and its
action carries ``meta.offset`` and ``meta.ack: true``: a user's the offset of
their inbox stream (:mod:`wsgate.core.inbox`), a connection's one of this
node's own sequence (an epoch in microseconds, like a stream's, so the two
never meet in practice). The client answers ``@@wsgate/ACK {offset}`` once
it dispatched the action; until then the action is sent again every
``timeout_s`` to the target's connections here, and for a user also when a
tab of theirs connects, until it is acknowledged or ``ttl_s`` after the
publish (then ``EXPIRED``). A connection's delivery expires with the
connection (a new connection is someone else's). The client de-duplicates
by offset, so its application sees the action once.

States, one enum, transitions only here: ``PENDING`` (nobody got it yet) →
``DELIVERED`` (sent to at least one connection) → ``ACKED``; ``PENDING`` or
``DELIVERED`` → ``EXPIRED``. A finished entry (acked or expired) stays
readable for ``ttl_s`` more, then is freed.

Bounds: at most ``max_entries`` entries; past it the oldest finished one is
freed first, and with every entry unfinished a new acknowledged publish is
refused (:meth:`Acks.reserve` returns ``None``). Every entry has one deadline
on one :class:`~wsgate.auth.wheel.TimerWheel` (its next send, its expiry or
its freeing), so a thousand unacknowledged actions cost one timer.

The store is pluggable. On one node this table is the truth. In a cluster a
:class:`Ledger` (:mod:`wsgate.cluster.acks`, over the backend's store) is:
each node keeps in its table the deliveries it published (their frame is
not known yet: a user's offset is assigned by their inbox stream) and the
ones it framed for its own connections, and tells the ledger of each
(:meth:`Ledger.record`). An ACK at any node finishes the entry there and in
the ledger (:meth:`Ledger.finish`, won by one node: that node alone tells
``acked``, the ``@@wsgate/DELIVERED`` event). Before an entry is sent again
or expired, its node asks the ledger (:meth:`Ledger.check`): finished
elsewhere, it is finished here too, without a send. A tab's reconnect to
another node finds the user's unfinished ones through the inbox preload
(:meth:`Acks.restore`).
"""

from __future__ import annotations

import enum
import functools
import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from wsgate.auth.wheel import Scheduler, TimerWheel
from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action
from wsgate.typing import ConnectionId, UserId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.dispatch import Handler
    from wsgate.core.pool import Pool

__all__ = ["AckSettings", "AckState", "Acks", "Ledger", "install"]


class AckSettings(msgspec.Struct, frozen=True):
    """``[inbox]``'s acknowledged-delivery settings, as the gateway builds :class:`Acks`."""

    timeout_s: float = 10.0
    """An unacknowledged action is sent again this long after its last send."""
    ttl_s: float = 300.0
    """It is sent again until this long after the publish (then expired); a finished
    entry stays readable this long more."""
    max_entries: int = 10_000
    """Most entries held (0: unbounded)."""


class AckState(enum.Enum):
    """Where an acknowledged delivery is; the value is the API's name."""

    PENDING = "pending"
    DELIVERED = "delivered"
    ACKED = "acked"
    EXPIRED = "expired"


_FINISHED: Final = (AckState.ACKED, AckState.EXPIRED)


class Ledger(Protocol):
    """A cluster's shared record of deliveries, as one node's :class:`Acks` uses it.

    Every call returns at once (the work is queued: the core never awaits);
    the answers come back through the callbacks, later, on the event loop. A
    call the backend fails is logged and counted by the implementation and
    answered as "unknown" (fail open: the node goes on from its own table).
    """

    def record(
        self, id_: str, user: bool, target: str, offset: int, expires_at: float, sent: bool
    ) -> None:
        """Delivery ``id_`` exists (created when new); a nonzero ``offset`` is its
        action's, ``sent``: some connection got it. Never moves a finished one."""
        ...

    def finish(self, id_: str, state: AckState, done: Callable[[bool], None]) -> None:
        """Finish ``id_`` as ``state`` (acked or expired) unless it is; ``done(True)``
        when this call finished it (never called when the backend failed)."""
        ...

    def check(self, id_: str, done: Callable[[AckState | None], None]) -> None:
        """``done`` with ``id_``'s state in the cluster (``None``: unknown, or the
        backend failed)."""
        ...


class _Entry:
    __slots__ = ("data", "expires_at", "id", "offset", "state", "target", "user")

    def __init__(self, id_: str, user: bool, target: str, expires_at: float) -> None:
        self.id = id_
        self.user = user
        """``True``: ``target`` is a user id; ``False``: a connection id."""
        self.target = target
        self.expires_at = expires_at
        self.state = AckState.PENDING
        self.offset = 0
        self.data = b""
        """The frame as sent (freed when the entry finishes)."""


class Acks:
    """One node's acknowledged deliveries (see the module docstring).

    Order of calls: :meth:`reserve` an id; the fan-out frames the action and
    calls :meth:`track` with it (and :meth:`next_offset` first for a
    connection); then :meth:`published` (every publish with an id, framed
    here or not); clients' ``ACK`` reach :meth:`acked`; the gateway calls
    :meth:`connected` and :meth:`disconnected`. In a cluster the inbox
    preload calls :meth:`restore` before a user's first tab here is admitted.
    """

    def __init__(
        self,
        pool: Pool,
        scheduler: Scheduler,
        *,
        timeout_s: float,
        ttl_s: float,
        max_entries: int,
        acked: Callable[[Connection, str, int], None] | None = None,
        ledger: Ledger | None = None,
        now: Callable[[], float] = time.time,
        id_factory: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    ) -> None:
        self._pool = pool
        self._on_acked = acked
        """Told ``(connection, delivery id, offset)`` of each acknowledgement (the
        ``@@wsgate/DELIVERED`` lifecycle event); must not raise."""
        self.ledger = ledger
        """The cluster's shared record (``None``: one node, this table is the truth)."""
        self._timeout = timeout_s
        self._ttl = ttl_s
        self._max = max_entries
        self._now = now
        self._new_id = id_factory
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        """By id, oldest first; at most ``max_entries``."""
        self._by_offset: dict[tuple[str, int], str] = {}
        """(user or connection id, offset) → id of each unfinished entry."""
        self._by_target: dict[str, dict[str, None]] = {}
        """User or connection id → ids of its unfinished entries, in order."""
        self._sequence = itertools.count(int(now() * 1_000_000) + 1)
        self.wheel: TimerWheel[str] = TimerWheel(
            scheduler, self._due, resolution_s=min(1.0, max(timeout_s / 4, 0.01)), now=now
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ttl_s(self) -> float:
        """How long a delivery is sent again, and a finished one stays readable."""
        return self._ttl

    def published(self, id_: str, user: bool, target: str) -> None:
        """Delivery ``id_`` (reserved) was handed to the fan-out. Framed here already
        (:meth:`track`): nothing more. Else, on one node, it found no target (a
        connection not here): ``EXPIRED`` at once; in a cluster another node frames
        it (or nobody: it expires ``ttl_s`` after the publish), and this node keeps
        it ``PENDING`` and checks the ledger every ``timeout_s``."""
        if id_ in self._entries:
            return
        entry = self._entries[id_] = _Entry(id_, user, target, self._now() + self._ttl)
        if self.ledger is None:
            entry.user, entry.target, entry.state = False, "", AckState.EXPIRED
            self.wheel.set(id_, self._now() + self._ttl)
            return
        self._by_target.setdefault(target, {})[id_] = None
        self.ledger.record(id_, user, target, 0, entry.expires_at, False)
        self.wheel.set(id_, min(entry.expires_at, self._now() + self._timeout))

    def state(self, id_: str) -> AckState | None:
        """The state of delivery ``id_`` in this node's table; ``None`` when unknown
        or freed (in a cluster the ledger knows more: :mod:`wsgate.cluster.acks`)."""
        entry = self._entries.get(id_)
        return None if entry is None else entry.state

    def reserve(self) -> str | None:
        """A new delivery id, or ``None`` when the table is full of unfinished entries.

        O(1) until the table is full; then it looks for the oldest finished entry,
        O(entries) at worst (a table full of unfinished ones)."""
        if self._max and len(self._entries) >= self._max:
            for id_, entry in self._entries.items():  # oldest first
                if entry.state in _FINISHED:
                    self._free(id_)
                    break
            else:
                return None
        return self._new_id()

    def next_offset(self) -> int:
        """The offset of a connection's next acknowledged action."""
        return next(self._sequence)

    def track(self, id_: str, user: bool, target: str, offset: int, data: bytes, sent: int) -> None:
        """Delivery ``id_`` was framed as ``data`` at ``offset`` and sent to ``sent``
        connections of ``target`` here; it is sent again until acknowledged. An
        entry this node holds already (it published it) is completed; a finished
        one is left as it is."""
        entry = self._hold(id_, user, target, offset, data, self._now() + self._ttl)
        if entry is None:
            return
        if sent:
            entry.state = AckState.DELIVERED
        if self.ledger is not None:
            self.ledger.record(id_, user, target, offset, entry.expires_at, bool(sent))
        self.wheel.set(id_, min(entry.expires_at, self._now() + self._timeout))

    def restore(
        self, id_: str, target: str, offset: int, data: bytes, state: AckState, expires_at: float
    ) -> None:
        """The ledger's word on user ``target``'s delivery ``id_``, found in their inbox
        stream (its frame ``data``) as a first tab of theirs is admitted here: an
        unfinished one is held, to be sent by :meth:`connected`; a finished one is
        finished here too (never sent again from this node)."""
        if state in _FINISHED:
            entry = self._entries.get(id_)
            if entry is not None and entry.state not in _FINISHED:
                self._finish(entry, state)
            return
        entry = self._hold(id_, True, target, offset, data, expires_at)
        if entry is not None:
            if state is AckState.DELIVERED:
                entry.state = state
            self.wheel.set(id_, min(entry.expires_at, self._now() + self._timeout))

    def acked(self, conn: Connection, offset: int) -> bool:
        """``conn`` acknowledged ``offset`` (of its user's inbox or its own); ``False``
        when nothing unfinished has it (acknowledged already, expired, never sent).
        In a cluster the event is told once the ledger confirmed this ACK finished it."""
        for key in (conn.id, conn.principal.sub):
            id_ = self._by_offset.get((key, offset))
            if id_ is not None:
                self._finish(self._entries[id_], AckState.ACKED)
                if self.ledger is None:
                    self._told(conn, id_, offset, True)
                else:
                    self.ledger.finish(
                        id_, AckState.ACKED, functools.partial(self._told, conn, id_, offset)
                    )
                return True
        return False

    def _told(self, conn: Connection, id_: str, offset: int, won: bool) -> None:
        if won and self._on_acked is not None:
            self._on_acked(conn, id_, offset)

    def connected(self, conn: Connection) -> None:
        """A tab of a user connected: send it the user's unacknowledged actions."""
        ids = self._by_target.get(conn.principal.sub) if not conn.principal.anonymous else None
        for id_ in list(ids or ()):
            entry = self._entries[id_]
            if entry.data:
                conn.sink.send(entry.data)
                self._delivered(entry)

    def disconnected(self, conn: Connection) -> None:
        """A connection closed: its own unacknowledged deliveries expire."""
        for id_ in list(self._by_target.get(conn.id, ())):
            self._expire(self._entries[id_])

    def close(self) -> None:
        """Disarm the timer (the node stops)."""
        self.wheel.close()

    # Internals ---------------------------------------------------------------

    def _hold(
        self, id_: str, user: bool, target: str, offset: int, data: bytes, expires_at: float
    ) -> _Entry | None:
        """The unfinished entry ``id_`` with its frame (created when new); ``None``
        when it is finished."""
        entry = self._entries.get(id_)
        if entry is None:
            entry = self._entries[id_] = _Entry(id_, user, target, expires_at)
        elif entry.state in _FINISHED:
            return None
        if entry.offset != offset:
            self._by_offset.pop((entry.target, entry.offset), None)
        entry.offset, entry.data = offset, data
        self._by_offset[(target, offset)] = id_
        self._by_target.setdefault(target, {})[id_] = None
        return entry

    def _due(self, id_: str) -> None:
        entry = self._entries.get(id_)
        if entry is None:
            return
        if entry.state in _FINISHED:
            self._free(id_)
            return
        if self.ledger is None:
            self._advance(entry)
        else:  # finished elsewhere? (the answer re-arms the timer)
            self.ledger.check(id_, lambda state: self._checked(id_, state))

    def _checked(self, id_: str, state: AckState | None) -> None:
        entry = self._entries.get(id_)
        if entry is None or entry.state in _FINISHED:
            return
        if state in _FINISHED:
            assert state is not None
            self._finish(entry, state)
            return
        self._advance(entry)

    def _advance(self, entry: _Entry) -> None:
        """Expire ``entry`` when due, else send it again and set its next deadline."""
        now = self._now()
        if now >= entry.expires_at:
            self._expire(entry)
            return
        if self._send(entry):
            self._delivered(entry)
        self.wheel.set(entry.id, min(entry.expires_at, now + self._timeout))

    def _delivered(self, entry: _Entry) -> None:
        """``entry`` was sent to a connection: a pending one is ``DELIVERED`` (told to
        the ledger, which may not know yet: restored here, or published here first)."""
        if entry.state is AckState.PENDING and self.ledger is not None:
            self.ledger.record(
                entry.id, entry.user, entry.target, entry.offset, entry.expires_at, True
            )
        entry.state = AckState.DELIVERED

    def _send(self, entry: _Entry) -> int:
        if not entry.data:
            return 0  # published here, framed by another node
        if entry.user:
            tabs = self._pool.users.get(UserId(entry.target)) or {}
            for tab in tabs.values():
                tab.sink.send(entry.data)
            return len(tabs)
        conn = self._pool.connections.get(ConnectionId(entry.target))
        if conn is None:
            return 0
        conn.sink.send(entry.data)
        return 1

    def _expire(self, entry: _Entry) -> None:
        self._finish(entry, AckState.EXPIRED)
        if self.ledger is not None:
            self.ledger.finish(entry.id, AckState.EXPIRED, _ignore)

    def _finish(self, entry: _Entry, state: AckState) -> None:
        entry.state = state
        entry.data = b""
        self._by_offset.pop((entry.target, entry.offset), None)
        ids = self._by_target.get(entry.target)
        if ids is not None:
            ids.pop(entry.id, None)
            if not ids:
                del self._by_target[entry.target]
        self.wheel.set(entry.id, self._now() + self._ttl)  # readable a while, then freed

    def _free(self, id_: str) -> None:
        entry = self._entries.pop(id_)
        self.wheel.cancel(id_)
        if entry.state not in _FINISHED:
            self._finish(entry, AckState.EXPIRED)
            self.wheel.cancel(id_)


def _ignore(_won: bool) -> None:
    pass


def install(acks: Acks | None, register: Callable[[str, Handler], None]) -> None:
    """Register the ACK handler (``acks`` ``None``: acknowledged delivery is off)."""

    def on_ack(conn: Connection, action: Action) -> None:
        rid = None if action.meta is None else action.meta.id
        try:
            body = msgspec.json.decode(action.payload, type=bi.AckPayload)
        except msgspec.DecodeError as exc:
            conn.send_error(ErrorCode.BAD_REQUEST, f"bad {action.type} payload: {exc}", rid)
            return
        if acks is not None:
            acks.acked(conn, body.offset)  # a repeated or late ACK changes nothing

    register(bi.ACK, on_ack)
